"""config.saved: what is read back from a run folder is data, checked against conf/ and the schemas."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from config.errors import ConfigError
from config.saved import as_data, load_saved_config, read_choices, refuse_code_and_interpolations


def _write(path, text):
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, named", [
    ("policy: diffusion\nhydra/launcher: slurm\n", "'hydra/launcher' is not a config group"),
    ("policy: ../../etc/evil\n", "policy='../../etc/evil' is not an option of conf/policy/"),
    ("policy: nosuchpolicy\n", "policy='nosuchpolicy' is not an option"),
    ("optimizer: [adam]\n", "optimizer=['adam'] is not an option"),
    ("- policy\n", "does not hold a mapping"),
])
def test_choices_must_name_options_of_conf(tmp_path, text, named):
    with pytest.raises(ConfigError, match=named.replace("[", r"\[").replace("]", r"\]")):
        read_choices(_write(tmp_path / "choices.yaml", text))


def test_choices_of_a_run_read_back(tmp_path):
    text = "policy: diffusion\nenv: pusht\noptimizer: preset/diffusion\nmodel: null\n"
    assert read_choices(_write(tmp_path / "choices.yaml", text)) == {"policy": "diffusion", "env": "pusht", "optimizer": "preset/diffusion",
                                              "model": None}


def test_a_repeat_of_conf_target_is_allowed_anything_else_refused(tmp_path):
    trusted = OmegaConf.create({"optimizer": {"_target_": "torch.optim.Adam", "lr": 1e-3}, "free": {}})
    refuse_code_and_interpolations({"optimizer": {"_target_": "torch.optim.Adam"}}, tmp_path, trusted)
    for planted, key in [({"optimizer": {"_target_": "os.system"}}, "optimizer._target_"),
                         ({"optimizer": {"_partial_": True}}, "optimizer._partial_"),
                         ({"free": {"a": [{"_args_": ["x"]}]}}, "free.a.0._args_"),
                         ({"free": {"_convert_": None}}, "free._convert_")]:
        with pytest.raises(ConfigError, match=f"key {key} would choose code to run"):
            refuse_code_and_interpolations(planted, tmp_path, trusted)


def test_saved_config_is_written_as_data():
    cfg = OmegaConf.create({"logger": {"_target_": "x.Y", "a": "${b}"}, "b": 3, "l": [{"_args_": [1], "c": 2}]})
    assert as_data(cfg) == {"logger": {"a": 3}, "b": 3, "l": [{"c": 2}]}


def test_a_saved_value_is_checked_against_its_schema(tmp_path):
    choices = _write(tmp_path / "choices.yaml", "policy: diffusion\nenv: pusht\ndataset: pusht\n")
    config = _write(tmp_path / "config.yaml", "batch_size: 4\npolicy:\n  input_features: {a: {type: STATE}}\n")
    cfg, _ = load_saved_config(config, choices)
    assert cfg.batch_size == 4 and cfg.policy.input_features.a.type == "STATE"  # a free-form dict takes its keys
    assert cfg.policy._target_ == "models.diffusion.modeling.DiffusionPolicy"  # from conf/, not the file
    _write(config, "batch_size: many\n")
    with pytest.raises(ConfigError, match="does not fit the config schemas"):
        load_saved_config(config, choices)
    _write(config, "policy:\n  horizn: 3\n")
    with pytest.raises(ConfigError, match="policy.horizn is not a key of the config schemas"):
        load_saved_config(config, choices)
