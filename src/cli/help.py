"""`python src/train.py --help`: the config groups a user picks from, without the internal ones.

Hydra's own help lists every group of the config search path, which here includes the `schema/*`
groups that type-check the YAML options (config/store.py); nobody picks those on a command line.
conf/hydra/help/hydrabot.yaml's template calls the `hydrabot_groups` resolver (registered in
config/__init__.py) for this listing instead.
"""

from __future__ import annotations

from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"
HIDDEN = ("hydra", "schema")


def group_options(conf_dir: Path = CONF_DIR) -> dict[str, list[str]]:
    """`{group: [option as typed after group=, ...]}` for the user-facing groups of conf/: nested
    folders are options of their group (`optimizer=preset/act`)."""
    groups: dict[str, list[str]] = {}
    for folder in sorted(p for p in conf_dir.iterdir() if p.is_dir() and p.name not in HIDDEN):
        options = sorted(str(f.relative_to(folder).with_suffix("")) for f in folder.rglob("*.yaml"))
        if options:
            groups[folder.name] = options
    return groups


def groups_help(conf_dir: Path = CONF_DIR) -> str:
    return "\n".join(f"{group}: {', '.join(options)}" for group, options in group_options(conf_dir).items())
