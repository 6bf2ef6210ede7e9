"""Train a robot policy or a neural field: `python src/train.py policy=diffusion env=pusht`.

Thin on purpose: translate the seeds' command-line flags, check the composition, hand the config
to `training.run`. Everything else lives in its package.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

SRC = str(Path(__file__).resolve().parent)
sys.path.insert(0, SRC)
# Jobs started elsewhere (submitit on SLURM, spawned ranks) unpickle code from src/ too.
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (SRC, os.environ.get("PYTHONPATH")) if p)

from training.threads import passive_waits  # noqa: E402

passive_waits()  # before torch loads: OpenMP reads it once (training/threads.py)
if not sys.stderr.isatty():  # CI logs, nohup, SLURM: tqdm's bars (demo recording, video decoding) redraw
    os.environ.setdefault("TQDM_MININTERVAL", "30")  # every 30 s, not 10 times a second (read when tqdm loads)

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from cli.entry import prepare_argv, report_user_errors  # noqa: E402

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    from training.run import run

    with report_user_errors(HydraConfig.get().runtime.output_dir):
        final = run(cfg)
    if final and cfg.objective not in final:
        raise KeyError(f"objective={cfg.objective} is not among the final eval metrics {sorted(final)}")
    return final.get(cfg.objective) if final else None


if __name__ == "__main__":
    # Imported here, not above: spawned processes (async env workers, data-parallel ranks) run this
    # file's top level again as __mp_main__, and the schemas import torch (about 2 s a process).
    from config.store import register_schemas

    register_schemas()
    sys.argv = prepare_argv(sys.argv, CONF_DIR, "train")
    main()
