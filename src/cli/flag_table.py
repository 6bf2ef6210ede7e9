"""Writes docs/FLAGS.md from the catalogues and rules of `cli.seed_flags`, so the doc cannot drift.

Run `python src/cli/flag_table.py` after changing a rule or adding a config option or key; a test fails
while the committed file differs from what this renders. A flag is "supported" when its target key
exists in the config composed with the default options (or with another option of its group, which
the status names), or when the group option it picks exists.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

if __name__ == "__main__":  # run as a script: make src/ importable, as train.py does
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from cli.seed_flags import (  # noqa: E402
    CONF_DIR,
    LEROBOT,
    LOAD_CONFIG_FLAG,
    NERFSTUDIO,
    PRESET_FLAG,
    VIS_CHOICES,
    VIS_FLAG,
    SeedFlag,
    config_keys,
    option_exists,
    rule_for,
    shell_quote,
    target_key,
    translate_argv,
)

DOC = Path(__file__).resolve().parents[2] / "docs" / "FLAGS.md"
EXAMPLES = (
    ["--policy.type=diffusion", "--env.type=pusht", "--batch_size=8", "--optimizer.lr=1e-4", "--offline.steps=100"],
    ["--max-num-iterations", "100", "--machine.seed", "1", "--mixed-precision", "False",
     "--pipeline.model.hidden-dim", "32"],
    ["--policy.down_dims", "256", "512", "1024", "--wandb.notes", "first try, small net", "eval.n_episodes=10"],
)
_PLACEHOLDER = {"bool": "<bool>", "scalar": "<value>", "any": "[<values>]", "list": "[<values>]",
                "pairs": "{<name>:<value>}", "dict": "{<key>:<value>}"}


def status(seed: SeedFlag) -> str:
    """`supported[ with group=option]`, `awaits <feature>` or `not supported: <why>`."""
    if seed.flag == "--help":
        return "supported: Hydra's help (config groups, keys and override syntax)"
    if seed.flag in (PRESET_FLAG, LOAD_CONFIG_FLAG, VIS_FLAG):
        return "supported"
    rule = rule_for(seed.flag)
    if rule.target is None:
        return f"not supported: {rule.note}"
    if rule.group:
        return _group_status(seed, rule.target, [option for _, option in rule.values], rule.note)
    key = target_key(seed.flag, rule)
    if key in config_keys():
        return "supported"
    group = key.split(".")[0]
    alternatives = [o for o in _pickable_options(group) if key in config_keys(f"{group}={o}")]
    if alternatives:
        return "supported with " + " or ".join(f"{group}={o}" for o in alternatives)
    presets = [o.split("/", 1)[1] for o in _preset_options(group) if key in config_keys(f"{group}={o}")]
    presets = [m for m in presets if option_exists("model", m)]
    if presets:  # a key of a model's training preset (nerfacto's grouped optimizers/schedulers)
        return "supported with " + " or ".join(f"model={m}" for m in presets)
    if rule.note:
        return f"awaits {rule.note}"
    missing = [o for o in seed.owners if not option_exists(group, o)]
    return f"awaits {_options_phrase(group, missing)}" if missing else f"awaits the key {key}"


def _group_status(seed: SeedFlag, group: str, options: list[str], note: str) -> str:
    listed = re.fullmatch(r"\{([\w,]+)\}", seed.seed_type)
    options = options or (listed.group(1).split(",") if listed else [])
    if not options:
        return "supported" if _pickable_options(group) else f"awaits {note or group + ' options'}"
    present = [o for o in options if option_exists(group, o)]
    missing = [o for o in options if o not in present]
    if not missing:
        return "supported"
    awaits = note or _options_phrase(group, missing)
    return f"supported for {', '.join(present)}; awaits {awaits}" if present else f"awaits {awaits}"


def _options_phrase(group: str, names: list[str]) -> str:
    return f"{group} option{'s' if len(names) > 1 else ''} {', '.join(names)}"


def _pickable_options(group: str) -> list[str]:
    """Options picked by name; presets follow the policy instead."""
    folder = CONF_DIR / group
    if not folder.is_dir():
        return []
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml")
                  if "preset" not in p.relative_to(folder).parts)


def _preset_options(group: str) -> list[str]:
    folder = CONF_DIR / group / "preset"
    return sorted(f"preset/{p.stem}" for p in folder.glob("*.yaml")) if folder.is_dir() else []


def override_text(seed: SeedFlag) -> str:
    if seed.flag == "--help":
        return "`--help`"
    if seed.flag == PRESET_FLAG:
        return "none: `true` is the default; `false` needs `optimizer=<name>`"
    if seed.flag == LOAD_CONFIG_FLAG:
        return ("the saved run's group choices (its checkpoint's choices.yaml) and each value of the file that "
                "differs from them: `model=nerfacto data=synthetic ... <key>=<value> ...`")
    if seed.flag == VIS_FLAG:
        return "; ".join(f"{value}: `viewer={viewer} logger={logger}`"
                         for value, (viewer, logger) in VIS_CHOICES.items())
    rule = rule_for(seed.flag)
    if rule.target is None:
        return "—"
    if rule.values:
        return ", ".join(f"`{rule.target}={option}` ({value})" for value, option in rule.values)
    if rule.group:
        return f"`{rule.target}=<name>`"
    return f"`{target_key(seed.flag, rule)}={_PLACEHOLDER[seed.kind]}`"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _table(catalogue: dict[str, SeedFlag]) -> tuple[list[str], int]:
    rows = ["| seed flag | Hydra override | status |", "| --- | --- | --- |"]
    supported = 0
    for seed in catalogue.values():
        state = status(seed)
        supported += state.startswith("supported")
        flag = "`-h`, `--help`" if seed.flag == "--help" else f"`{seed.flag}`"
        kind = f" `{seed.seed_type}`" if seed.seed_type else ""
        rows.append(f"| {_cell(flag + kind)} | {_cell(override_text(seed))} | {_cell(state)} |")
    return rows, supported


def _example(args: list[str]) -> list[str]:
    _, notes = translate_argv(args)
    return [f"$ python src/train.py {' '.join(map(shell_quote, args))}", notes[-1]]


def render() -> str:
    if not config_keys():
        raise SystemExit("conf/ does not compose with its default options; fix it before regenerating docs/FLAGS.md")
    lerobot, lerobot_ok = _table(LEROBOT)
    nerfstudio, nerfstudio_ok = _table(NERFSTUDIO)
    examples = [line for args in EXAMPLES for line in (*_example(args), "")][:-1]
    lines = [
        "# Seed flags",
        "",
        "<!-- Generated by `python src/cli/flag_table.py` from src/cli/seed_flags.py; do not edit by hand. -->",
        "",
        "`python src/train.py` also takes the command-line flags of the two programs this project replaces:",
        "LeRobot's `train.py` (draccus: `--policy.type=act`) and nerfstudio's `ns-train nerfacto` (tyro:",
        "`--pipeline.model.hidden-dim 64`), and our own config keys written as flags (`--dataset.root /data`).",
        "`src/cli/seed_flags.py` rewrites them into Hydra overrides before Hydra reads the command line, and",
        "prints the Hydra form once:",
        "",
        "```",
        *examples,
        "```",
        "",
        "How the words are read:",
        "",
        "- Hydra's own syntax passes through untouched: `key=value`, `+key=value`, `~key`, `group=option`,",
        "  `-m`, `--cfg job`, `--info`, `-cn/-cp/-cd <value>`, ...; `-h/--help` is Hydra's help.",
        "- `--flag=value` and `--flag value` are the same. List flags take every word up to the next flag or",
        "  `key=value` (`--optimizer.betas 0.9 0.999` -> `optimizer.betas=[0.9,0.999]`), or one `[a,b]`.",
        "- `True`/`False` become `true`/`false` (a boolean flag alone means `true`); `None` becomes `null`.",
        "- A string that Hydra would read differently (a comma, brackets, quotes, `=`, spaces at its ends) is",
        "  quoted; under `-m` a comma-separated value stays a sweep (`-m --optimizer.lr=1e-4,3e-4`).",
        "- Mapping flags (`Dict`) take Hydra's `{VISUAL:MEAN_STD}` or JSON `'{\"VISUAL\": \"MEAN_STD\"}'`.",
        "- nerfstudio's dashed names work with underscores too (`--pipeline.model.hidden_dim`).",
        "- An unknown flag stops the run with one line naming the three closest known flags. A flag marked",
        "  \"not supported\" below stops it with one line saying why. A flag whose target \"awaits\" a",
        "  feature is translated all the same, and Hydra names the missing option or key until it lands.",
        f"- `{LOAD_CONFIG_FLAG} <run>/config.yaml` (or a checkpoint's config.yaml) reads that file and writes it",
        "  out as overrides: the run's group choices and every value that differs from what they compose to,",
        "  so the new run (its own directory) has the saved config; flags and overrides after it apply on top.",
        f"- `{VIS_FLAG}` picks the viewer and the tracker together, as in nerfstudio: `viewer` alone is the web viewer",
        "  without a tracker (metrics still go to the run's metrics.jsonl), `viewer+wandb` (or `viewer+mlflow`) both;",
        "  MLflow stands in for wandb, tensorboard and comet. Unlike ns-train, no viewer opens unless asked for.",
        f"- `{PRESET_FLAG}=true` is what happens anyway (the optimizer and scheduler follow",
        "  `conf/optimizer/preset/<policy>.yaml`); `=false` must come with an optimizer choice.",
        "",
        "Status: **supported** composes today with the default options (or with the option it names);",
        "**awaits** names the config option or feature the target key arrives with; **not supported** says",
        "why there is no translation.",
        "",
        f"## LeRobot `train.py`: {len(LEROBOT)} options, {lerobot_ok} supported now",
        "",
        *lerobot,
        "",
        f"## nerfstudio `ns-train nerfacto`: {len(NERFSTUDIO)} options, {nerfstudio_ok} supported now",
        "",
        *nerfstudio,
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    DOC.write_text(render())
    print(f"wrote {DOC}")


if __name__ == "__main__":
    main()
