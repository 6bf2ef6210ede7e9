"""What happens to the command line before Hydra sees it, and to user errors after.

Hydra's own messages for a bad override are several lines and sometimes suggest the wrong fix
(`+key=value` for a key that is misspelt); composing once up front lets us answer with one line
that names the key and its closest real neighbours, before Hydra creates a run directory.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import logging
import os
import re
import shutil
import sys
from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.errors import ConfigCompositionException, MissingConfigException, OverrideParseException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException, ValidationError

from cli.seed_flags import config_keys, hydra_flag_words, names_nerfacto, translate_argv
from config.ranges import check_ranges

_MULTIRUN = {"--multirun", "-m"}
# The overrides prepare_argv added for the user (family_switch, env_dataset), as a JSON list: a run's name
# (training.run.run_name) leaves them out, since the command typed did not spell them.
ADDED_OVERRIDES_ENV = "HYDRABOT_ADDED_OVERRIDES"
_HYDRA_NO_COMPOSE = {"--help", "-h", "--hydra-help", "--version", "--shell-completion", "-sc", "--multirun", "-m",
                     "--info", "-i", "--cfg", "-c", "--resolve", "--run", "-r"}


def fail(message: str) -> None:
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(2)


def prepare_argv(argv: list[str], config_dir: str, config_name: str) -> list[str]:
    """Translates seed flags, then checks that the overrides compose (single runs only)."""
    try:
        args, notes = translate_argv(argv[1:])
    except ValueError as e:
        fail(str(e))
    if names_nerfacto(argv[1:]) and not any(a.split("=", 1)[0] in ("model", "policy") for a in args):
        args = ["model=nerfacto", *args]  # the seed is `ns-train nerfacto`: its flags name that method
        notes.append("nerfstudio's flags name nerfacto: added model=nerfacto")
    for note in notes:
        print(note, file=sys.stderr)
    typed = list(args)
    args = env_dataset(family_switch(args, config_dir), config_dir)
    os.environ[ADDED_OVERRIDES_ENV] = json.dumps([a for a in args if a not in typed])
    overrides, i = [], 0
    while i < len(args):
        words = hydra_flag_words(args, i)
        if not words and not args[i].startswith("-"):
            overrides.append(args[i])
        i += max(words, 1)
    if not any(a in _HYDRA_NO_COMPOSE for a in args):
        cfg = check_composes(config_dir, config_name, overrides)
        check_warm_start(cfg)
        check_writable(cfg, multirun=False)
    elif any(a in _MULTIRUN for a in args) and not any(a in _HYDRA_NO_COMPOSE - _MULTIRUN for a in args):
        check_writable(check_sweep(config_dir, config_name, overrides), multirun=True)
    return [argv[0], *args]


def added_overrides() -> list[str]:
    """What prepare_argv added to the command typed in this process or the one that launched it."""
    return json.loads(os.environ.get(ADDED_OVERRIDES_ENV, "[]"))


def check_writable(cfg, multirun: bool) -> None:
    """The folders the run will write (cli.writable) are tried before Hydra creates the run directory."""
    from cli.writable import unwritable_folder

    HydraConfig.instance().set_config(cfg)  # its ${hydra:...} resolve against it, not a later sweep trial's
    message = unwritable_folder(cfg, multirun)
    if message:
        fail(message)


def check_sweep(config_dir: str, config_name: str, overrides: list[str]):
    """Every value of every swept key composes, with the other keys at their first value, so that a
    bad sweep value is one line before any job is launched or submitted. One key at a time: n keys
    of k values cost 1 + n(k - 1) compositions, not k^n. Interval sweeps (optuna's) list no values
    and are left to the sweeper. Returns the config of the first values."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        fail(explain_composition_error(e, config_dir))
    first, swept = [], []
    for text, override in zip(overrides, parsed):
        values = None
        if override.is_sweep_override():
            with contextlib.suppress(Exception):  # an interval sweep has no values to list
                values = list(override.sweep_string_iterator())
        if not values:
            if not override.is_sweep_override():  # an interval: each job's value is checked when it starts
                first.append(text)
            continue
        key = override.get_key_element()
        first.append(f"{key}={values[0]}")
        swept.append((len(first) - 1, key, values))
    cfg = check_composes(config_dir, config_name, first)  # its messages name the key, swept or not
    for pos, key, values in swept:
        for value in values[1:]:
            trial = [*first[:pos], f"{key}={value}", *first[pos + 1:]]
            check_composes(config_dir, config_name, trial, label=f"sweep value {key}={value}")
    return cfg


def family_switch(args: list[str], config_dir: str | None = None) -> list[str]:
    """`model=<m>` makes a neural-field run. The root picks `optimizer: preset/${policy}`, an
    interpolated default that only the command line may override, so the switch happens here:
    `~policy optimizer=preset/<m> scheduler=preset/<m>` are added unless those groups are given,
    and `data=synthetic` (`data=nerfstudio` when `data.data=<scene>` is given) when no data is picked.
    An `experiment=<e>` whose defaults list picks a model (`override /model: <m>`) switches the same way."""
    plain = [a for a in args if not a.startswith("-")]
    model = next((a.split("=", 1)[1] for a in plain if a.startswith("model=")), None)
    anchor = "model="
    if model is None and config_dir is not None:
        experiment = next((a.split("=", 1)[1] for a in plain if a.startswith("experiment=")), None)
        model, anchor = experiment_model(config_dir, experiment), "experiment="
    if not model or model == "null":
        return args
    given = {a.split("=", 1)[0].lstrip("~+") for a in plain if "=" in a or a.startswith("~")}
    extra = [] if "policy" in given else ["~policy"]
    if "data" not in given:  # a scene path (--data /path) means nerfstudio's format, else the generated scene
        extra.append("data=nerfstudio" if "data.data" in given else "data=synthetic")
    extra += [f"{g}=preset/{model}" for g in ("optimizer", "scheduler") if g not in given]
    at = next(i for i, a in enumerate(args) if a.startswith(anchor))  # keep the overrides contiguous
    return [*args[:at + 1], *extra, *args[at + 1:]]


# The scripted demonstrations (conf/dataset/) recorded in each env task; `env=<e>` alone trains on them.
ENV_DATASETS = {
    "aloha": {"AlohaInsertion-v0": "aloha_insertion", "AlohaTransferCube-v0": "aloha_transfer_cube"},
    "xarm": {"XarmLift-v0": "xarm_lift"},
}


def env_dataset(args: list[str], config_dir: str | None = None) -> list[str]:
    """`env=aloha` (or `--env.type=aloha`) without `dataset=` or `experiment=` adds the dataset of the
    env's task (`env.task=`, else the env's default), as the root's `dataset: pusht` would not fit it."""
    plain = [a for a in args if not a.startswith("-")]
    picks = dict(a.split("=", 1) for a in plain if "=" in a)
    env = picks.get("env")
    if env not in ENV_DATASETS or "dataset" in picks or "~dataset" in plain or "experiment" in picks \
            or config_dir is None:  # ~dataset: a pure online run
        return args
    task = picks.get("env.task") or OmegaConf.load(Path(config_dir) / "env" / f"{env}.yaml").get("task")
    dataset = ENV_DATASETS[env].get(task)
    if dataset is None:
        return args
    at = args.index(f"env={env}")
    return [*args[:at + 1], f"dataset={dataset}", *args[at + 1:]]


def experiment_model(config_dir: str, experiment: str | None) -> str | None:
    """The model option that conf/experiment/<experiment>.yaml picks in its defaults list, if any."""
    path = Path(config_dir) / "experiment" / f"{experiment}.yaml"
    if not experiment or not path.is_file():  # none, a sweep list, or a name Hydra will refuse itself
        return None
    entries = OmegaConf.load(path).get("defaults") or []
    picks = [e for e in entries if OmegaConf.is_dict(e)]
    return next((str(v) for e in picks for k, v in e.items() if k.replace("override", "").strip() == "/model"), None)


def check_composes(config_dir: str, config_name: str, overrides: list[str], label: str = ""):
    """The composed config (Hydra's node included), or one `error:` line (after `label: `) and exit 2."""
    prefix = f"{label}: " if label else ""
    try:
        with initialize_config_dir(config_dir=config_dir, version_base="1.3"):
            cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
            HydraConfig.instance().set_config(cfg)
            OmegaConf.resolve(OmegaConf.masked_copy(cfg, [k for k in cfg if k != "hydra"]))
            check_ranges(cfg)  # every field's declared range, then the dataclasses' own checks
            from training.device import check_device_options

            check_device_options(cfg.machine.device_type, cfg.amp_dtype)
            return cfg
    except (ConfigCompositionException, MissingConfigException, OverrideParseException, OmegaConfBaseException) as e:
        fail(prefix + explain_composition_error(e, config_dir))
    except ValueError as e:  # out-of-range values, the configs' own checks, the device and AMP options (ConfigError)
        fail(prefix + str(e))


def check_warm_start(cfg) -> None:
    """A warm start's checkpoint is found and read before Hydra creates the run directory, so a wrong
    or damaged one leaves nothing behind."""
    from config.errors import ConfigError
    from training.checkpoint import CheckpointError, warm_start_source

    if cfg.resume and (cfg.load_dir is not None or cfg.load_checkpoint is not None):
        fail("resume=true continues this run from its own checkpoint; load_dir/load_checkpoint start a new run "
             "from another run's: keep one of them")
    try:
        warm_start_source(cfg)
    except (CheckpointError, ConfigError) as e:  # ConfigError: its saved config is refused (config.saved)
        fail(str(e))


def explain_composition_error(e: Exception, config_dir: str) -> str:
    """One line: what is wrong, and the closest valid spellings."""
    text = " ".join(str(e).split())
    cause = e.__cause__ or e.__context__
    cause_text = " ".join(str(cause).split()) if cause else ""
    m = re.search(r"Could not find '([\w/]+)/([\w.\-/]+)'", text)
    if m:
        group, choice = m.groups()
        options = _group_options(config_dir, group)
        near = difflib.get_close_matches(choice, options, n=3, cutoff=0.3)
        hint = f"did you mean {', '.join(near)}? " if near else ""
        return f"{group}={choice} is not an option of the '{group}' group; {hint}options: {', '.join(options)}"
    m = re.search(r"Could not override '([\w.]+)'", text) or re.search(r"Key '([\w]+)' (?:is )?not in", text)
    if m:
        key = m.group(1)
        detail = cause_text or text
        km = re.search(r"Key '(\w+)' (?:is )?not in(?: struct)?", detail)
        if km:
            return _unknown_key_message(key, km.group(1), detail)
        return f"cannot set {key}: {_first_sentence(detail)}"
    if isinstance(cause, ValidationError) or "could not be converted" in cause_text + text:
        detail = cause_text or text
        key = re.search(r"full_key: ([\w.]+)", detail)
        where = f" for {key.group(1)}" if key else ""
        wanted = "true or false" if "valid bool" in detail else "a value of the key's type (`--cfg job` shows it)"
        return f"wrong type{where}: {_first_sentence(detail)}; give {wanted}"
    return _first_sentence(cause_text or text)


def _unknown_key_message(full_key: str, leaf: str, detail: str) -> str:
    parent = full_key.rsplit(".", 1)[0] if "." in full_key else ""
    schema = re.search(r"not in '(\w+)'", detail)
    siblings = [k for k in config_keys() if k.startswith(parent + ".") and "." not in k[len(parent) + 1:]] \
        if parent else [k for k in config_keys() if "." not in k]
    near = difflib.get_close_matches(full_key, siblings, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(near)}?" if near else "check the spelling"
    return (f"{full_key} is not a config key{' of ' + parent if parent else ''}"
            f"{' (' + schema.group(1) + ')' if schema else ''}; {hint} "
            "(`python src/train.py --cfg job` lists every key)")


def _first_sentence(text: str) -> str:
    text = text.replace("Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", "").strip()
    return text.split(" full_key:")[0].strip()


def _group_options(config_dir: str, group: str) -> list[str]:
    folder = os.path.join(config_dir, group)
    out = []
    for dirpath, _, files in os.walk(folder):
        for f in files:
            if f.endswith(".yaml"):
                rel = os.path.relpath(os.path.join(dirpath, f[:-5]), folder)
                out.append(rel.replace(os.sep, "/"))
    return sorted(out)


@contextlib.contextmanager
def report_user_errors(run_dir: str | os.PathLike | None = None):
    """Errors in the inputs (dataset, checkpoint, config values) become one line and exit 2 (in a
    job of a `--multirun` sweep: one logged line, and the exception fails that job alone).

    `run_dir`: the directory Hydra made for this run; when the error comes before the run wrote
    anything of its own, the directory is removed too, so a bad input leaves nothing behind."""
    from config.errors import ConfigError
    from data.lerobot_dataset import DatasetError
    from data.nerf.dataparsers import SceneError
    from training.checkpoint import CheckpointError

    try:
        yield
    except (ConfigError, DatasetError, SceneError, CheckpointError) as e:
        if in_multirun_job():  # fail this job only; the launcher goes on with the others
            logging.getLogger("train").error("error: %s", e)
            raise
        if run_dir is not None:
            discard_unstarted_run(Path(run_dir))
        fail(str(e))


def in_multirun_job() -> bool:
    """True inside a job of a `--multirun` sweep, whatever the launcher. There a user error stays an
    exception: Hydra then marks that job failed and runs the others, while a SystemExit would end
    the whole sweep under the basic launcher (and leave submitit without the job's result)."""
    from hydra.types import RunMode

    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def discard_unstarted_run(run_dir: Path) -> bool:
    """Removes `run_dir` if it holds only what Hydra writes before a job starts (`.hydra/`, the job's
    log); a directory with anything of a run in it (config.yaml, metrics, checkpoints) is kept."""
    if not run_dir.is_dir() or any(p.name != ".hydra" and p.suffix != ".log" for p in run_dir.iterdir()):
        return False
    shutil.rmtree(run_dir, ignore_errors=True)
    return True
