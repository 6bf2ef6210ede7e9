"""Experiment tracking: the `Tracker` interface, `NullTracker`, `MLflowTracker`, git tags.

Importing this package does not import mlflow (about 2 s); `MLflowTracker.start()` does.
"""

from tracking.base import TERMINAL_STATUSES, NullTracker, Tracker, flatten_params
from tracking.git_info import git_commit, git_dirty, git_tags
from tracking.local_log import METRICS_FILENAME, read_metrics
from tracking.mlflow_tracker import MLflowTracker

__all__ = [
    "METRICS_FILENAME",
    "MLflowTracker",
    "NullTracker",
    "TERMINAL_STATUSES",
    "Tracker",
    "flatten_params",
    "git_commit",
    "git_dirty",
    "git_tags",
    "read_metrics",
]
