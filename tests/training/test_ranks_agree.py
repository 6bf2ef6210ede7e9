"""After training, every data-parallel rank reports its host, steps and a digest of its weights: rank 0
writes them to ranks.json and fails the run when they differ (2 gloo ranks on this host)."""

from __future__ import annotations

import json
import socket
from functools import partial

import pytest
from omegaconf import OmegaConf

from toy_pipeline import report_ranks
from training.distributed import RANKS_FILE, launch

MACHINE = OmegaConf.create({"num_devices": 2, "num_machines": 1, "machine_rank": 0, "dist_url": "auto"})


def test_ranks_with_the_same_weights_are_written_to_ranks_json(tmp_path):
    reports = launch(MACHINE, partial(report_ranks, tmp_path, None))
    assert json.loads((tmp_path / RANKS_FILE).read_text()) == reports
    assert [(r["rank"], r["host"], r["started_at_step"], r["step"]) for r in reports] == \
        [(0, socket.gethostname(), 0, 5), (1, socket.gethostname(), 0, 5)]
    assert reports[0]["weights_sha256"] == reports[1]["weights_sha256"]
    assert reports[0]["pid"] != reports[1]["pid"]


def test_a_rank_whose_weights_differ_fails_the_run(tmp_path):
    with pytest.raises(RuntimeError, match=r"different weights or steps \(rank 0 on .*; rank 1 on "):
        launch(MACHINE, partial(report_ranks, tmp_path, 1))  # one bias moved by 1e-7 on rank 1
    reports = json.loads((tmp_path / RANKS_FILE).read_text())
    assert reports[0]["weights_sha256"] != reports[1]["weights_sha256"]
