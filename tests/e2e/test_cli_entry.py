"""Hydra's own inspection flags work through train.py's flag translation and composition check."""

from __future__ import annotations

import pytest

from helpers import run_train

pytestmark = pytest.mark.slow


def test_help_lists_the_groups():
    r = run_train(["--help"])
    assert r.returncode == 0, r.stderr
    lines = {line.split(":")[0]: line for line in r.stdout.splitlines() if ": " in line}
    for group, option in (("policy", "diffusion"), ("env", "pusht"), ("optimizer", "adamw"), ("logger", "none"),
                          ("scheduler", "cosine_decay_with_warmup"), ("experiment", "quickstart")):
        assert option in lines[group].split(": ")[1].split(", "), lines.get(group)


def test_info_defaults_shows_the_policy_preset():
    r = run_train(["--info", "defaults"])
    assert r.returncode == 0, r.stderr
    assert "optimizer/preset/diffusion" in r.stdout and "scheduler/preset/diffusion" in r.stdout


def test_seed_flags_are_translated_and_printed():
    r = run_train(["--policy.type=diffusion", "--env.type=pusht", "--batch_size=8", "--optimizer.lr=1e-4",
                   "--offline.steps=100", "--cfg", "job"])
    assert r.returncode == 0, r.stderr
    assert ("translated: python src/train.py policy=diffusion env=pusht batch_size=8 optimizer.lr=1e-4 steps=100"
            in r.stderr)
    assert "steps: 100" in r.stdout and "lr: 0.0001" in r.stdout


def test_nerfstudio_flags_alone_make_a_nerfacto_run():
    """The issue's nerfstudio example: `ns-train nerfacto`'s flags, no `model=`, name nerfacto."""
    r = run_train(["--max-num-iterations", "100", "--machine.seed", "1", "--mixed-precision", "False",
                   "--pipeline.model.hidden-dim", "32", "--cfg", "job"])
    assert r.returncode == 0, r.stderr
    assert "translated: python src/train.py steps=100 machine.seed=1 use_amp=false model.hidden_dim=32" in r.stderr
    assert "added model=nerfacto" in r.stderr
    import yaml

    cfg = yaml.safe_load(r.stdout)
    assert cfg["policy"] is None and cfg["model"]["hidden_dim"] == 32
    assert (cfg["steps"], cfg["machine"]["seed"], cfg["use_amp"]) == (100, 1, False)
