"""Every ranged field of every registered schema refuses an out-of-range value when the command line is
checked (cli.entry.prepare_argv, in-process): exit 2, one line naming the key, the value and the range,
and nothing created. Every number of every schema has a declared range or is allowlisted below."""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path

import pytest
from omegaconf import DictConfig, ListConfig, OmegaConf

from helpers import CONF_DIR

NERF = ["model=nerfacto", "~policy", "optimizer=preset/nerfacto", "scheduler=preset/nerfacto", "data=synthetic"]
# Selections that together hold every registered schema (the root, each group's options).
SELECTIONS = [[], ["optimizer=adamw"], ["optimizer=sgd", "scheduler=cosine_decay_with_warmup"],
              ["scheduler=diffuser"], NERF, [*NERF, "logger=none"],
              ["policy=act", "policy.pretrained_backbone_weights=null"], ["policy=vqbet"], ["policy=pi0"], ["policy=tdmpc"]]

# Numbers that take any value, each with the reason.
UNRANGED = {
    ("TrainConfig", "seed"): "any integer seeds the generators (numpy's is taken modulo 2**32)",
    ("MachineConfig", "seed"): "= seed",
    ("DemosConfig", "seed"): "any integer seeds the scripted expert's episodes",
    ("NerfactoConfig", "collider_params"): "nerfacto replaces the collider by NearFar(near_plane, far_plane)",
    ("NerfactoConfig", "loss_coefficients"): "kept for nerfstudio's flags; nerfacto does not read them",
}


def _is_numeric(hint) -> bool:
    if hint in (int, float):
        return True
    return any(_is_numeric(a) for a in typing.get_args(hint) if a is not type(None) and a is not str)


def _dataclasses_of(hint) -> list[type]:
    if dataclasses.is_dataclass(hint):
        return [hint]
    return [d for a in typing.get_args(hint) for d in _dataclasses_of(a)]


def registered_schemas() -> set[type]:
    """The root schema, every option's schema, the dataclasses nested in them, and the dataparsers (an
    untyped node whose `_target_` picks the dataclass, checked by NerfDataConfig.cross_check)."""
    from config import schemas
    from config.store import SCHEMAS
    from data.nerf.dataparsers import DATAPARSERS

    todo = [schemas.TrainConfig, *(s for options in SCHEMAS.values() for s in options.values()),
            *DATAPARSERS.values()]
    seen = set()
    while todo:
        cls = todo.pop()
        if cls not in seen:
            seen.add(cls)
            todo += [d for hint in typing.get_type_hints(cls).values() for d in _dataclasses_of(hint)]
    return seen


def ranged_paths() -> dict[tuple[type, str], tuple[list[str], str]]:
    """(schema, field) -> (a selection, the field's key in it), from the composed configs' node types."""
    from hydra import compose, initialize_config_dir
    from hydra.core.hydra_config import HydraConfig

    from config.ranges import field_range
    from data.nerf.dataparsers import DATAPARSERS

    found: dict[tuple[type, str], tuple[list[str], str]] = {}

    def walk(node, path, selection):
        items = enumerate(node) if isinstance(node, ListConfig) else (
            (k, node[k]) for k in node if not OmegaConf.is_missing(node, k) and (path or k != "hydra"))
        kind = OmegaConf.get_type(node) if isinstance(node, DictConfig) else None
        ranged = {f.name for f in dataclasses.fields(kind) if field_range(f)} if dataclasses.is_dataclass(kind) else ()
        for key, value in items:
            full = f"{path}.{key}" if path else str(key)
            if key in ranged:
                found.setdefault((kind, key), (selection, full))
            if isinstance(value, (DictConfig, ListConfig)):
                walk(value, full, selection)

    for selection in SELECTIONS:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="train", overrides=selection, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            walk(cfg, "", selection)
    for fmt, parser in DATAPARSERS.items():  # the generated scene's dataparser has every option of both
        selection = [*NERF, f"data.scene.format={fmt}"]
        for f in dataclasses.fields(parser):
            if field_range(f):
                found[(parser, f.name)] = (selection, f"data.dataparser.{f.name}")
    return found


def _flat(hint) -> list:
    return [hint, *(t for a in typing.get_args(hint) for t in _flat(a))]


def out_of_range(rng, hint):
    """A value of the field's type just outside `rng` (a list of them for a list field)."""
    if rng.choices:
        return "not_a_choice"
    types = _flat(hint)
    number = float if float in types else int
    if rng.ge is not None or rng.gt is not None:
        bound = rng.ge if rng.ge is not None else rng.gt
        candidates = [bound - k for k in range(1, 4)] if rng.ge is not None else [bound, bound - 1]
    else:
        bound = rng.le if rng.le is not None else rng.lt
        candidates = [bound + 1] if rng.le is not None else [bound, bound + 1]
    bad = number(next(c for c in candidates if c not in rng.also))
    if any(typing.get_origin(t) in (list, tuple) for t in types):
        return [bad] * (rng.length or 1)
    return bad


def test_every_ranged_field_refuses_an_out_of_range_value_and_creates_nothing(tmp_path, monkeypatch, capsys):
    from cli.entry import prepare_argv
    from config.ranges import field_range
    from config.store import register_schemas

    register_schemas()
    schemas = registered_schemas()
    declared = {(cls, f.name): field_range(f) for cls in schemas for f in dataclasses.fields(cls) if field_range(f)}
    paths = ranged_paths()
    assert len(declared) >= 100, f"only {len(declared)} ranged fields: the walk would prove little"
    assert set(declared) == set(paths), ("ranged fields that no selection composes: "
                                         f"{sorted((c.__name__, f) for c, f in set(declared) - set(paths))}")

    home = tmp_path / "home"
    monkeypatch.setenv("HYDRABOT_HOME", str(home))
    monkeypatch.chdir(tmp_path)
    failures = []
    for (cls, name), (selection, key) in sorted(paths.items(), key=lambda kv: kv[1][1]):
        rng = declared[(cls, name)]
        bad = out_of_range(rng, typing.get_type_hints(cls)[name])
        text = f"[{','.join(map(str, bad))}]" if isinstance(bad, list) else str(bad)
        with pytest.raises(SystemExit) as exit_info:
            prepare_argv(["train.py", *selection, f"{key}={text}"], CONF_DIR, "train")
        lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
        shown = f"[{', '.join(map(str, bad))}]" if isinstance(bad, list) else (repr(bad) if rng.choices else str(bad))
        expected = f"{key}={shown}"
        range_text = "is not one of" if rng.choices else rng.describe()
        if exit_info.value.code != 2 or len(lines) != 1 or expected not in lines[0] or range_text not in lines[0]:
            failures.append(f"{key}={text}: exit {exit_info.value.code}, {lines}")
    assert not failures, "\n".join(failures)
    assert sorted(p.name for p in Path(tmp_path).iterdir()) == [], "something was created"


def test_every_number_of_every_schema_has_a_range_or_a_reason():
    from config.ranges import field_range

    unranged = {(cls.__name__, f.name) for cls in registered_schemas() for f in dataclasses.fields(cls)
                if _is_numeric(typing.get_type_hints(cls)[f.name]) and field_range(f) is None}
    assert unranged == set(UNRANGED), f"numbers without a range (declare one with config.ranges.ranged): " \
                                      f"{sorted(unranged - set(UNRANGED))}; stale allowlist: " \
                                      f"{sorted(set(UNRANGED) - unranged)}"


@pytest.mark.parametrize("override, expected", [
    (["use_amp=maybe"], "wrong type for use_amp: Value 'maybe' is not a valid bool (type str); give true or false"),
    (["--mixed-precision", "maybe"], "--mixed-precision takes true or false, got 'maybe'"),
    (["policy.crop_shape=[120,120]"], "policy.crop_shape=[120, 120] is out of range: must fit in the env's image "
                                      "pixels of shape [96, 96, 3] ([H, W, C]); set policy.crop_shape to at most "
                                      "[96, 96], or null"),
    ([*NERF, "model.base_res=64", "model.max_res=32"], "model.max_res=32 is out of range: must be >= model.base_res=64"),
    ([*NERF, "eval_freq=100"], "eval_freq=100 is out of range for a neural field: must be 0"),
    (["machine.num_machines=2", "machine.machine_rank=2"], "machine.machine_rank=2 is out of range: must be below "
                                                           "machine.num_machines=2"),
    (["optimizer.lr=inf"], "optimizer.lr=inf is out of range: must be a finite number > 0"),
    ([*NERF, "data.train_num_images_to_sample_from=0"],
     "data.train_num_images_to_sample_from=0 is out of range: must be >= 1 or -1 (-1: all images)"),
])
def test_relations_and_types_are_one_line(override, expected, capsys):
    from cli.entry import prepare_argv
    from config.store import register_schemas

    register_schemas()
    with pytest.raises(SystemExit) as exit_info:
        prepare_argv(["train.py", *override], CONF_DIR, "train")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(lines) == 1 and expected in lines[0], lines


@pytest.mark.parametrize("override", [[], NERF, [*NERF, "data.train_num_images_to_sample_from=-1"],
                                      ["steps=0", "eval_freq=0", "save_freq=0", "num_workers=0"]])
def test_values_in_range_pass(override):
    from cli.entry import prepare_argv
    from config.store import register_schemas

    register_schemas()
    assert prepare_argv(["train.py", *override], CONF_DIR, "train")[1:] == override
