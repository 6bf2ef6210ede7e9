"""Git state for run tags: which commit produced a run, and whether the tree had local edits.

Plain `git` subprocesses (no GitPython) so that it works wherever git is on PATH and costs nothing
where it is not: every helper answers None outside a repository or without git.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

GIT_COMMIT_TAG = "mlflow.source.git.commit"
GIT_DIRTY_TAG = "git.dirty"


def _git(cwd: str | Path, *args: str) -> str | None:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_commit(cwd: str | Path = ".") -> str | None:
    """The full hash of HEAD, or None outside a repository (or in one without commits)."""
    return _git(cwd, "rev-parse", "HEAD") or None


def git_dirty(cwd: str | Path = ".") -> bool | None:
    """True when tracked files differ from HEAD; untracked files (outputs, caches) don't count."""
    status = _git(cwd, "status", "--porcelain", "--untracked-files=no")
    return None if status is None else bool(status)


def git_tags(cwd: str | Path = ".") -> dict[str, str]:
    """Run tags for the commit and dirty flag; empty outside a repository.

    The commit goes under MLflow's own key so the UI shows it in its "Source" column.
    """
    commit = git_commit(cwd)
    if commit is None:
        return {}
    dirty = git_dirty(cwd)
    tags = {GIT_COMMIT_TAG: commit}
    if dirty is not None:
        tags[GIT_DIRTY_TAG] = str(dirty).lower()
    return tags
