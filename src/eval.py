"""Evaluate a saved checkpoint without training:

    python src/eval.py checkpoint=outputs/runs/<day>/<run>/checkpoints/last eval.n_episodes=10

The checkpoint carries its resolved config (features included), so no dataset is needed; plain
`key=value` overrides (eval.*, machine.device_type, ...) apply on top. Metrics are printed and
written, with the rollout videos, to `output_dir` (default: <run dir>/eval_only/step_<N>).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import yaml  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from cli.entry import fail, report_user_errors  # noqa: E402


def main(argv: list[str]) -> dict:
    from pipelines import build_pipeline
    from training import checkpoint as ckpt_lib
    from training.device import select_device
    from training.rng import seed_everything

    args = dict(a.split("=", 1) for a in argv if "=" in a)
    bad = [a for a in argv if "=" not in a]
    if bad or "checkpoint" not in args:
        fail(f"usage: python src/eval.py checkpoint=<run dir or checkpoint dir> [key=value ...] (got {' '.join(argv)})")
    ckpt = ckpt_lib.resolve_checkpoint(args.pop("checkpoint"))
    state = ckpt_lib.load_training_state(ckpt)
    cfg = OmegaConf.load(ckpt / ckpt_lib.CONFIG_FILE)
    out_dir = Path(args.pop("output_dir", ckpt.parent.parent / "eval_only" / f"step_{int(state['step']):06d}"))
    for key, value in args.items():
        if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
            fail(f"{key} is not a key of the checkpoint's config ({ckpt / ckpt_lib.CONFIG_FILE})")
        OmegaConf.update(cfg, key, _parse(value), merge=False)

    seed_everything(cfg.machine.seed)
    device = select_device(cfg.machine.device_type)
    pipeline = build_pipeline(cfg, device, need_dataset=False)
    ckpt_lib.load_weights(ckpt, pipeline.model)
    metrics, _ = pipeline.evaluate(out_dir, int(state["step"]))
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "eval.json").write_text(json.dumps({"checkpoint": str(ckpt), "step": int(state["step"]), **metrics},
                                                  indent=2))
    print(json.dumps(metrics, indent=2))
    return metrics


def _parse(value: str):
    """Typed like a Hydra override value: numbers, booleans, null, lists."""
    return yaml.safe_load(value)


if __name__ == "__main__":
    from config.store import register_schemas

    register_schemas()
    with report_user_errors():
        main(sys.argv[1:])
