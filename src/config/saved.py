"""Configs read back from disk are data: they never decide what code runs.

A run folder or checkpoint holds `config.yaml` (the resolved config, values only) and `choices.yaml`
(the group options it was composed from). People download checkpoints and share run folders, so both
are untrusted. What gets instantiated comes only from the project's own `conf/`: the choices are
checked to be options that exist there, the config is composed from them afresh (so every `_target_`
is conf/'s own, and every value lands on its typed schema), and the saved values are merged on top.
A saved file that names code (`_target_`, `_args_`, `_partial_`, `_recursive_`, `_convert_`) or holds
an interpolation (`${...}`: a resolved config has none, and a resolver could read the environment) is
refused with one line naming the file and the key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from config.errors import ConfigError

CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"
INSTANTIATION_KEYS = frozenset({"_target_", "_args_", "_partial_", "_recursive_", "_convert_"})
# Group choices that fix the model and data of a run (what choices.yaml records).
RUN_GROUPS = ("policy", "env", "dataset", "model", "data", "optimizer", "scheduler", "machine", "logger", "eval",
              "experiment")
# Groups a run does not record: they do not change what is trained, so a resumed run picks them afresh
# (`resume=true viewer=web` watches a run that trained without the viewer).
FREE_GROUPS = ("viewer",)
_OPTION_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*")


def as_data(node: Any) -> Any:
    """A plain container of `node` without instantiation keys: what a run writes to its config.yaml
    (the classes are conf/'s, found again from choices.yaml, so the file need not and must not name them)."""
    if OmegaConf.is_config(node):
        node = OmegaConf.to_container(node, resolve=True)
    if isinstance(node, dict):
        return {k: as_data(v) for k, v in node.items() if k not in INSTANTIATION_KEYS}
    if isinstance(node, list):
        return [as_data(v) for v in node]
    return node


def read_yaml_mapping(path: Path) -> dict:
    """A YAML file that must hold a mapping, parsed without any object constructors (safe_load)."""
    try:
        data = yaml.safe_load(Path(path).read_text())
    except (yaml.YAMLError, OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path} cannot be read as YAML ({' '.join(str(e).split())[:200]}); "
                          "use a file written by src/train.py") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path} does not hold a mapping of keys; use a file written by src/train.py")
    return data


def read_choices(path: Path) -> dict[str, str | None]:
    """`choices.yaml`: each key a run group, each value null or the name of an option in conf/<group>/."""
    choices = read_yaml_mapping(path)
    for group, choice in choices.items():
        if group not in RUN_GROUPS:
            raise ConfigError(f"{path}: '{group}' is not a config group a run records (one of "
                              f"{', '.join(RUN_GROUPS)}); the file was edited: restore it or start a new run")
        if choice is None:
            continue
        name = str(choice)
        if (not isinstance(choice, str) or not _OPTION_NAME.fullmatch(name) or ".." in name.split("/")
                or not (CONF_DIR / group / f"{name}.yaml").is_file()):
            raise ConfigError(f"{path}: {group}={choice!r} is not an option of conf/{group}/; the file was edited "
                              f"or written by another version: set it to one of the options there")
    return choices


def refuse_code_and_interpolations(data: Any, path: Path, trusted: DictConfig | None = None, prefix: str = "") -> None:
    """Raises ConfigError at the first instantiation key or `${...}` string in `data`.

    A key that only repeats conf/'s own at the same place (`trusted` has that key with that value)
    is allowed: run folders written before config.yaml held values only carry those."""
    if isinstance(data, dict):
        for key, value in data.items():
            full = f"{prefix}{key}"
            if key in INSTANTIATION_KEYS:
                if trusted is not None and _same_as_trusted(trusted, full, value):
                    continue
                raise ConfigError(f"{path}: key {full} would choose code to run; files read from a run folder "
                                  "or checkpoint are data, and what is built comes from conf/ alone: remove the "
                                  "key, or do not use this file")
            refuse_code_and_interpolations(value, path, trusted, f"{full}.")
    elif isinstance(data, list):
        for i, value in enumerate(data):
            refuse_code_and_interpolations(value, path, trusted, f"{prefix}{i}.")
    elif isinstance(data, str) and "${" in data:
        raise ConfigError(f"{path}: {prefix[:-1]}={data!r} is an interpolation, which a saved (resolved) config "
                          "never holds and which could read the environment; replace it by its value")


def _same_as_trusted(trusted: DictConfig, key: str, value: Any) -> bool:
    missing = object()
    try:
        found = OmegaConf.select(trusted, key, default=missing, throw_on_resolution_failure=False)
    except OmegaConfBaseException:
        return False
    return found is not missing and found == value


def compose_choices(choices: dict[str, str | None], extra: list[str] | None = None) -> DictConfig:
    """train.yaml composed from a run's (checked) group choices: conf/'s targets and typed schemas.
    Works inside a Hydra app (train.py) and outside one (eval.py, render.py, --load-config)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from config.store import register_schemas

    overrides = [f"{g}={c}" for g, c in choices.items() if c is not None]
    if choices.get("policy") is None:  # a neural-field run: no policy group
        overrides.append("~policy")
    overrides += extra or []
    register_schemas()
    if GlobalHydra.instance().is_initialized():
        return compose(config_name="train", overrides=overrides)
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        return compose(config_name="train", overrides=overrides)


def load_saved_config(config_file: Path, choices_file: Path) -> tuple[DictConfig, dict[str, str | None]]:
    """`(config, choices)`: a run's saved config as a typed, struct config, composed from its checked choices
    with the saved values merged on top (each checked against its schema). Anything else is a ConfigError
    naming the file."""
    for f in (config_file, choices_file):
        if not f.is_file():
            raise ConfigError(f"{f} is missing; this run folder or checkpoint was not written by src/train.py")
    choices = read_choices(choices_file)
    try:
        schema = compose_choices(choices)
    except Exception as e:  # a choice that no longer composes
        raise ConfigError(f"the group choices of {choices_file} do not compose with this version's conf/ "
                          f"({' '.join(str(e).split())[:200]})") from None
    saved = read_yaml_mapping(config_file)
    refuse_code_and_interpolations(saved, config_file, schema)
    data = as_data(saved)
    unknown = _first_unknown_key(schema, data)
    if unknown is not None:
        raise ConfigError(f"{config_file}: {unknown} is not a key of the config schemas; the file was edited or "
                          "written by another version: remove the key")
    OmegaConf.set_struct(schema, False)  # free-form dicts (policy.input_features, ...) take the saved keys
    try:
        cfg = OmegaConf.merge(schema, data)
    except OmegaConfBaseException as e:
        raise ConfigError(f"{config_file} does not fit the config schemas: {' '.join(str(e).split())[:300]}; "
                          "it was edited or written by another version") from None
    OmegaConf.set_struct(cfg, True)
    return cfg, choices


def _first_unknown_key(schema: Any, data: dict, prefix: str = "") -> str | None:
    """The first key of `data` that a typed (dataclass) node of `schema` does not have; free-form dicts
    (and fields typed Any or dict that are null in the schema) take any key."""
    typed = OmegaConf.get_type(schema) not in (dict, None)
    for key, value in data.items():
        child = schema._get_node(key, validate_access=False, throw_on_missing_key=False)  # nothing is resolved
        if typed and child is None:
            return f"{prefix}{key}"
        if isinstance(value, dict) and OmegaConf.is_dict(child) and not child._is_none():
            found = _first_unknown_key(child, value, f"{prefix}{key}.")
            if found is not None:
                return found
    return None


def set_value(cfg: DictConfig, key: str, value: Any, config_file: Path) -> None:
    """A command-line `key=value` on top of a loaded config: the key must exist, the value fit its schema."""
    if OmegaConf.select(cfg, key, default="__missing__") == "__missing__":
        raise ConfigError(f"{key} is not a key of the loaded config ({config_file}); `--cfg job` lists the keys")
    try:  # a list is merged (which replaces it) so that its items land on their typed schema nodes again
        OmegaConf.update(cfg, key, value, merge=isinstance(value, list))
    except OmegaConfBaseException as e:
        raise ConfigError(f"{key}={value}: {' '.join(str(e).split()).split(' full_key:')[0]}") from None
