"""The online phase's config relations: each bad combination is one `error:` line, exit 2, before anything
is created; the good ones compose."""

from __future__ import annotations

import pytest

from helpers import CONF_DIR

ON = ["online.steps=10", "online.steps_between_rollouts=5"]


@pytest.mark.parametrize("override, expected", [
    (["online.steps=10"], "online.steps=10 needs online.steps_between_rollouts: set it"),
    ([*ON, "online.buffer_capacity=100", "online.buffer_seed_size=200"],
     "online.buffer_seed_size=200 is out of range: must be <= online.buffer_capacity=100"),
    ([*ON, "machine.num_devices=2"], "online.steps=10 is out of range with machine.num_devices=2 x"),
    ([*ON, "~dataset"], "steps=100000 and online.sampling_ratio=0.5 are out of range without a dataset (~dataset)"),
    ([*ON, "~dataset", "online.sampling_ratio=1", "steps=100"], "steps=100 is out of range without a dataset"),
    (["~dataset"], "~dataset (no dataset) leaves nothing to train on"),
    (["model=nerfacto", *ON], "online.steps=10 is out of range for a neural field: must be 0"),
    ([*ON, "online.sampling_ratio=1.5"], "online.sampling_ratio=1.5 is out of range: must be in [0, 1]"),
])
def test_online_relations_are_one_line(override, expected, capsys, tmp_path, monkeypatch):
    from cli.entry import prepare_argv
    from config.store import register_schemas

    register_schemas()
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_info:
        prepare_argv(["train.py", *override], CONF_DIR, "train")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("override", [ON, [*ON, "~dataset", "online.sampling_ratio=1", "steps=0"],
                                      [*ON, "env=xarm", "~dataset", "online.sampling_ratio=1", "steps=0"]])
def test_online_configs_that_fit_compose(override, compose):
    from cli.entry import prepare_argv
    from config.store import register_schemas

    register_schemas()
    args = prepare_argv(["train.py", *override], CONF_DIR, "train")[1:]
    assert "dataset=xarm_lift" not in args  # ~dataset is a choice: env=xarm adds no dataset
    cfg = compose(args)
    assert cfg.online.steps == 10 and (cfg.dataset is None) == ("~dataset" in override)
