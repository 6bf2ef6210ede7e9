"""Open the live viewer on a checkpoint: a trained neural field (nerfstudio's ns-viewer), or a robot policy's
evaluation rollout replayed with the action chunks it planned:

    python src/view.py checkpoint=outputs/runs/<day>/<run> [viewer.websocket_port=7010] [machine.device_type=cpu]
    python src/view.py checkpoint=<policy run> [episode=3] [machine.seed=1000] [env.episode_length=100]

The checkpoint is read as eval.py and render.py read one (checked against its manifest; its config is
data, config.saved). A neural field is rebuilt with its training cameras (the scene must still be at the
run's data.data) and served with its run's metrics; a policy runs evaluation's episode `episode` (env
seed machine.seed + episode: eval.py's eval_episode_<episode>.mp4) in its env, and the replay is served
(viewer/replay.py; PushT only, viewer/rollout.py says why). Until Ctrl-C: http://127.0.0.1:7007 unless the
`viewer.*` overrides say otherwise.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli.entry import fail, report_user_errors  # noqa: E402

USAGE = ("usage: python src/view.py checkpoint=<run dir or checkpoint dir> [episode=<i>: a policy's] "
         "[viewer.<option>=value ...] [key=value ...]")
# the viewer.* options a policy's replay uses (the others are about rendering a neural field)
REPLAY_OPTIONS = ("websocket_host", "websocket_port", "websocket_port_default", "relative_log_filename")


def main(argv: list[str]) -> None:
    from config.errors import ConfigError
    from pipelines import load_checkpoint, pipeline_class
    from training import termination
    from training.checkpoint import resolve_checkpoint, run_dir_of
    from viewer.rollout import check_replayable

    args = dict(a.split("=", 1) for a in argv if "=" in a)
    if any("=" not in a for a in argv) or "checkpoint" not in args:
        fail(f"{USAGE} (got {' '.join(argv)})")
    checkpoint = args.pop("checkpoint")
    episode = args.pop("episode", None)
    viewer_args = {k: v for k, v in args.items() if k.startswith("viewer.")}
    options = viewer_options(viewer_args)

    def viewable(cfg) -> None:
        family = pipeline_class(cfg)
        if hasattr(family, "viewer_scene"):
            if episode is not None:
                raise ConfigError(f"episode={episode} picks a policy's evaluation episode to replay, and "
                                  f"{resolve_checkpoint(checkpoint)} holds a neural field; drop it")
            return
        check_replayable(cfg.env.type, resolve_checkpoint(checkpoint))
        nerf_only = sorted(k for k in viewer_args if k.removeprefix("viewer.") not in REPLAY_OPTIONS)
        if nerf_only:
            raise ConfigError(f"{', '.join(nerf_only)}: a neural field's viewer options; a policy's replay takes "
                              f"viewer.{', viewer.'.join(REPLAY_OPTIONS)}")

    index = episode_index(episode)
    ckpt, pipeline, cfg, state, _ = load_checkpoint(
        checkpoint, {k: v for k, v in args.items() if not k.startswith("viewer.")}, before_build=viewable)
    termination.unwind_on_sigterm()  # SIGTERM closes the viewer as Ctrl-C does
    run_dir = run_dir_of(ckpt, cfg.get("relative_model_dir"))
    if hasattr(pipeline, "viewer_scene"):
        from viewer.web import WebViewer

        viewer = WebViewer(pipeline, run_dir, training=False, step=int(state["step"]), **options)
    else:
        from viewer.replay import ReplayViewer

        viewer = ReplayViewer(run_dir, **{k: options[k] for k in REPLAY_OPTIONS})
    try:
        if not hasattr(pipeline, "viewer_scene"):
            viewer.replay(pipeline.viewer_rollout(index))
        viewer.serve_forever()
    finally:
        viewer.close()


def episode_index(value: str | None) -> int:
    """`episode=<i>`: evaluation's episode i (0 when not given)."""
    if value is None:
        return 0
    if not value.isdigit():
        fail(f"episode={value} is not an episode index; give a whole number >= 0 (episode i is evaluation's "
             "episode i, env seed machine.seed + i)")
    return int(value)


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
