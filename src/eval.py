"""Evaluate a saved checkpoint without training:

    python src/eval.py checkpoint=outputs/runs/<day>/<run>/checkpoints/last eval.n_episodes=10
    python src/eval.py checkpoint=<neural-field run>/checkpoints/last output_path=metrics.json

A policy is rolled out in its env; a neural field renders all the views of its scene's test split
(nerfstudio's ns-eval: the file's test_filenames, or the held-out frames of eval_mode; a Blender
scene's transforms_test.json); `split=val` renders the val split instead, the views the in-training
evaluation scored, and gives its numbers exactly (one code path). The checkpoint carries its resolved config (features included), so no training dataset is
needed; plain `key=value` overrides (eval.*, machine.device_type, ...) apply on top. Metrics are
printed and written, with the rollout videos or renders, to `output_dir` (default:
<run dir>/eval_only/step_<N>), and the files written are listed; `output_path` also writes them as
ns-eval's JSON:
{"experiment_name", "method_name", "checkpoint", "results": {...}} (a neural field adds "lpips_status":
whether LPIPS was computed, which needs local weights; it is never estimated).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cli.entry import fail, report_user_errors  # noqa: E402
from training.threads import passive_waits  # noqa: E402

passive_waits()  # before torch loads (training/threads.py)

USAGE = ("usage: python src/eval.py checkpoint=<run dir or checkpoint dir> [output_path=<file.json>] "
         "[split=test|val] [key=value ...]")
SPLITS = ("test", "val")  # a neural field's held-out views: ns-eval's test split, or training's val split


def main(argv: list[str]) -> dict:
    from pipelines import load_checkpoint
    from training.checkpoint import run_dir_of

    args = dict(a.split("=", 1) for a in argv if "=" in a)
    bad = [a for a in argv if "=" not in a]
    if bad or "checkpoint" not in args:
        fail(f"{USAGE} (got {' '.join(argv)})")
    output_dir, output_path = args.pop("output_dir", None), args.pop("output_path", None)
    split = args.pop("split", "test")
    if split not in SPLITS:
        fail(f"split={split} is not a split eval.py renders: use split=test (ns-eval) or split=val (the "
             "views the in-training evaluation scored)")
    ckpt, pipeline, cfg, state, choices = load_checkpoint(args.pop("checkpoint"), args, test_mode=split)
    step = int(state["step"])
    run_dir = run_dir_of(ckpt, cfg.get("relative_model_dir"))
    out_dir = Path(output_dir) if output_dir else run_dir / "eval_only" / f"step_{step:06d}"
    # the evaluation the training ran (its code and numbers), with its files in out_dir
    metrics, artifacts = pipeline.evaluate(run_dir, step, out_dir=out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # a neural field says whether LPIPS was computed (only from local weights), never a made-up number
    notes = {"lpips_status": pipeline.lpips_status()} if hasattr(pipeline, "lpips_status") else {}
    (out_dir / "eval.json").write_text(json.dumps({"checkpoint": str(ckpt), "step": step, **metrics, **notes},
                                                  indent=2))
    if output_path:
        report = {"experiment_name": cfg.job_name,
                  "method_name": choices.get("model") or choices.get("policy") or pipeline.family,
                  "checkpoint": str(ckpt), "results": metrics, **notes}
        Path(output_path).parent.mkdir(parents=True, exist_ok=True)
        Path(output_path).write_text(json.dumps(report, indent=2))
    print(json.dumps(metrics, indent=2))
    written = [out_dir / "eval.json", *map(Path, artifacts), *([Path(output_path)] if output_path else [])]
    print(f"evaluated {ckpt} (step {step}); wrote:")
    for path in written:
        print(f"  {path.absolute()}")
    return metrics


if __name__ == "__main__":
    from config.store import register_schemas

    register_schemas()
    with report_user_errors():
        main(sys.argv[1:])
