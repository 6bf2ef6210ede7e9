"""Data-parallel training through train.py: 2 CPU ranks (gloo), then the checkpoint resumes on 1."""

from __future__ import annotations

import json

import pytest
from safetensors.torch import load_file

from helpers import read_metrics, run_train, tiny_overrides

pytestmark = pytest.mark.slow


def test_two_ranks_train_and_the_checkpoint_resumes_on_one(tmp_path, pusht_root):
    run = tmp_path / "run"
    r = run_train(tiny_overrides(pusht_root, run, "machine.num_devices=2", "steps=2", "save_freq=2", "eval_freq=2"))
    assert r.returncode == 0, r.stderr[-3000:]
    logged = read_metrics(run)
    assert [m["step"] for m in logged if "train/loss" in m] == [2]  # one writer: rank 0
    assert [m["step"] for m in logged if "eval/pc_success" in m] == [2]
    config = (run / "checkpoints" / "last" / "config.yaml").read_text()
    assert "num_devices: 2" in config
    two_rank = load_file(str(run / "checkpoints" / "000002" / "model.safetensors"))

    r = run_train(tiny_overrides(pusht_root, run, "machine.num_devices=1", "steps=4", "save_freq=2",
                                 "resume=true"))
    assert r.returncode == 0, r.stderr[-3000:]
    one_rank = load_file(str(run / "checkpoints" / "000004" / "model.safetensors"))
    assert any((one_rank[k] - two_rank[k]).abs().max() > 0 for k in one_rank)
    assert [m["step"] for m in (json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines())
            if "train/loss" in m] == [2, 4]
