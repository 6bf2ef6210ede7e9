"""Open the live viewer on a trained neural field (nerfstudio's ns-viewer):

    python src/view.py checkpoint=outputs/runs/<day>/<run> [viewer.websocket_port=7010] [machine.device_type=cpu]

The checkpoint is read as eval.py and render.py read one (checked against its manifest; its config is
data, config.saved), the model is rebuilt with its training cameras (the scene must still be at the
run's data.data) and served with its run's metrics until Ctrl-C: http://127.0.0.1:7007 unless the
`viewer.*` overrides say otherwise. A robot policy's checkpoint is refused (see ROBOT_VIEW).
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli.entry import fail, report_user_errors  # noqa: E402

USAGE = "usage: python src/view.py checkpoint=<run dir or checkpoint dir> [viewer.<option>=value ...] [key=value ...]"
# Why a policy checkpoint gets no viewer: viser draws meshes, not simulators. Replaying a rollout would take
# an exporter per simulator (PushT's pymunk bodies, ALOHA's and xArm's MuJoCo geoms, posed every frame)
# and, for the joint-space action chunks of ALOHA, forward kinematics to show where a chunk leads.
ROBOT_VIEW = ("view.py shows neural fields, and {ckpt} holds a robot policy: a rollout's simulator scene has no "
              "viser drawing here (each simulator would need its own exporter of bodies to meshes, and joint-space "
              "action chunks forward kinematics); watch its rollouts with src/eval.py checkpoint={ckpt}, which "
              "saves their videos")


def main(argv: list[str]) -> None:
    from config.errors import ConfigError
    from pipelines import load_checkpoint, pipeline_class
    from training import termination
    from training.checkpoint import resolve_checkpoint, run_dir_of
    from viewer.web import WebViewer

    args = dict(a.split("=", 1) for a in argv if "=" in a)
    if any("=" not in a for a in argv) or "checkpoint" not in args:
        fail(f"{USAGE} (got {' '.join(argv)})")
    checkpoint = args.pop("checkpoint")
    options = viewer_options({k: v for k, v in args.items() if k.startswith("viewer.")})

    def viewable(cfg) -> None:
        if not hasattr(pipeline_class(cfg), "viewer_scene"):
            raise ConfigError(ROBOT_VIEW.format(ckpt=resolve_checkpoint(checkpoint)))

    ckpt, pipeline, cfg, state, _ = load_checkpoint(
        checkpoint, {k: v for k, v in args.items() if not k.startswith("viewer.")}, before_build=viewable)
    termination.unwind_on_sigterm()  # SIGTERM closes the viewer as Ctrl-C does
    viewer = WebViewer(pipeline, run_dir_of(ckpt, cfg.get("relative_model_dir")), training=False,
                       step=int(state["step"]), **options)
    try:
        viewer.serve_forever()
    finally:
        viewer.close()


def viewer_options(overrides: dict[str, str]) -> dict:
    """The viewer's options: conf's defaults (not the ones the run trained with: its port may be taken now)
    with this command's `viewer.<option>=value`, each checked against its declared range."""
    import dataclasses

    import yaml
    from omegaconf import OmegaConf

    from config.errors import ConfigError
    from config.ranges import check_ranges
    from config.saved import as_data, set_value
    from viewer.config import ViewerConfig

    known = sorted(f.name for f in dataclasses.fields(ViewerConfig) if f.name != "_target_")
    root = OmegaConf.create({"viewer": OmegaConf.structured(ViewerConfig)})
    for key, value in overrides.items():
        if key.removeprefix("viewer.") not in known:
            raise ConfigError(f"{key} is not a viewer option; the options: {', '.join(known)}")
        set_value(root, key, yaml.safe_load(value), Path("the command line"))
    check_ranges(root)
    return as_data(root.viewer)


if __name__ == "__main__":
    import logging

    from config.store import register_schemas

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    register_schemas()
    with report_user_errors():
        main(sys.argv[1:])
