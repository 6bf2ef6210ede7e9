"""The live viewer: `viewer=none` (the default) or `viewer=web` (nerfstudio's `--vis viewer`, on viser).

The training loop sees a viewer only as `training.loop.LoopHooks`; a pipeline makes itself viewable by
declaring `viewer_scene()` (viewer/scene.py). `view.py` opens the same viewer on a checkpoint.
"""

from __future__ import annotations

from pathlib import Path

from config.errors import ConfigError
from training.loop import LoopHooks


class NoViewer(LoopHooks):
    """`viewer=none`: nothing is served and the loop's hooks do nothing."""

    needs_scene = False

    def __init__(self, **_options):
        pass

    def serve_after_training(self) -> None:
        pass

    def close(self) -> None:
        pass


def refusal(family: str) -> str:
    return (f"the live viewer shows neural fields, and this is a {family} run: viewer=web (--vis viewer) needs "
            "model=nerfacto; drop it (viewer=none), and watch a policy's rollouts in its evaluation videos (eval.py) or, "
            "for PushT, replayed with their action chunks by src/view.py checkpoint=<run>")


def check_viewer(cfg) -> None:
    """Before anything is built (no dataset recorded, no port opened): the chosen viewer can show this run."""
    from hydra.utils import get_class

    from pipelines import pipeline_class

    if cfg.get("viewer") is None:
        return
    viewer = get_class(cfg.viewer._target_)
    family = pipeline_class(cfg)
    if viewer.needs_scene and not hasattr(family, "viewer_scene"):
        raise ConfigError(refusal(family.family))


def scene_of(pipeline):
    """The pipeline's declared scene; a pipeline without one cannot be viewed."""
    if not hasattr(pipeline, "viewer_scene"):
        raise ConfigError(refusal(pipeline.family))
    return pipeline.viewer_scene()


def build_viewer(viewer_cfg, pipeline, run_dir: str | Path, total_steps: int | None = None) -> LoopHooks:
    """The run's viewer (rank 0): it owns the model from here until the loop's `fit()` ends."""
    from hydra.utils import instantiate

    if viewer_cfg is None:
        return NoViewer()
    return instantiate(viewer_cfg, pipeline=pipeline, run_dir=Path(run_dir), training=True, total_steps=total_steps)
