"""Export the online buffer of a checkpoint as a LeRobotDataset:

    python src/export_buffer.py checkpoint=outputs/runs/<day>/<run> root=/data/my_rollouts
    python src/export_buffer.py checkpoint=<run>/checkpoints/000500 root=<new folder> use_videos=false

The buffer is read from the checkpoint (checked against its manifest first), as it was at that step;
each of its episodes becomes one dataset episode, without the final-observation frame, so the dataset
has the layout of a recorded one and trains or evaluates like any other (`dataset.root=<root>`).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli.entry import fail, report_user_errors  # noqa: E402

USAGE = ("usage: python src/export_buffer.py checkpoint=<run dir or checkpoint dir> root=<new dataset folder> "
         "[use_videos=true|false] [codebase_version=v2.1|v3.0]")


def main(argv: list[str]) -> Path:
    from data.lerobot_writer import CODEBASE_VERSIONS
    from data.online_buffer import FOLDER, OnlineBuffer, OnlineBufferError
    from training import checkpoint as ckpt_lib

    args = dict(a.split("=", 1) for a in argv if "=" in a)
    unknown = sorted(set(args) - {"checkpoint", "root", "use_videos", "codebase_version"})
    if any("=" not in a for a in argv) or unknown or not {"checkpoint", "root"} <= set(args):
        fail(f"{USAGE} (got {' '.join(argv)})")
    use_videos = args.get("use_videos", "true").lower()
    version = args.get("codebase_version", CODEBASE_VERSIONS[0])
    if use_videos not in ("true", "false") or version not in CODEBASE_VERSIONS:
        fail(f"use_videos takes true or false and codebase_version one of {', '.join(CODEBASE_VERSIONS)}; {USAGE}")
    root = Path(args["root"]).expanduser()
    if root.exists():
        fail(f"root={root} already exists; export into a new folder")
    ckpt = ckpt_lib.resolve_checkpoint(args["checkpoint"])
    ckpt_lib.verify(ckpt)
    cfg, _ = ckpt_lib.load_checked_config(ckpt)
    online = ckpt_lib.load_training_state(ckpt).get("online")
    if online is None:
        fail(f"checkpoint {ckpt} holds no online buffer (its run trained with online.steps=0)")
    saved = online.get("buffer") if isinstance(online, dict) else None
    try:
        fps, task = float(saved["fps"]), str(saved["task"])
    except (KeyError, TypeError, ValueError):
        raise OnlineBufferError(f"{ckpt / ckpt_lib.STATE_FILE}: its online buffer state is damaged") from None
    if not (math.isfinite(fps) and fps > 0):
        raise OnlineBufferError(f"{ckpt / ckpt_lib.STATE_FILE}: its online buffer says fps={fps}")
    buffer = OnlineBuffer(None, saved["features"], capacity=None, fps=fps, task=task)
    buffer.load_state_dict(saved, ckpt / FOLDER, ckpt_lib.manifest_entries(ckpt), link=False)
    out = buffer.export(root, robot_type=str(cfg.env.type), use_videos=use_videos == "true", codebase_version=version)
    print(f"exported {buffer.num_episodes} episodes ({len(buffer)} buffer frames) of {ckpt} to {out}")
    return out


if __name__ == "__main__":
    from config.store import register_schemas

    register_schemas()
    with report_user_errors():
        main(sys.argv[1:])
