"""--help shows the groups a user picks from (not the internal schema/* ones), and bash completion
(`eval "$(python src/train.py -sc install=bash)"`) completes the README's commands as they are written."""

from __future__ import annotations

import os
import re
import shutil
import sys

import pytest

from helpers import REPO, run_bounded, run_train


def test_help_lists_the_user_groups_and_hides_the_schemas():
    r = run_train(["--help"], timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "schema/" not in r.stdout and "schema/" not in r.stderr
    lines = r.stdout.splitlines()
    policies = next(line for line in lines if line.startswith("policy: "))[len("policy: "):].split(", ")
    assert {"act", "diffusion", "vqbet"} <= set(policies)
    assert any(line.startswith("optimizer: ") and "preset/diffusion" in line for line in lines)
    assert any(line.startswith("experiment: ") and "nerfacto_quickstart" in line for line in lines)
    assert 'eval "$(python src/train.py -sc install=bash)"' in r.stdout


@pytest.fixture(scope="module")
def complete(tmp_path_factory):
    """complete(line) -> bash's completions of `line`, with Hydra's completion installed as the README
    says, run from the repository root with `python` being this interpreter (an activated venv)."""
    if shutil.which("bash") is None:
        pytest.skip("bash is not installed")
    bindir = tmp_path_factory.mktemp("venv_bin")
    wrapper = bindir / "python"  # a script, not a symlink: the venv is found from the interpreter's own path
    wrapper.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    wrapper.chmod(0o755)
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    script = r'''
eval "$(python src/train.py -sc install=bash)"
COMP_LINE="$1"; COMP_POINT=${#COMP_LINE}; read -ra COMP_WORDS <<< "$COMP_LINE"
COMP_CWORD=$((${#COMP_WORDS[@]} - 1)); [ "${COMP_LINE: -1}" = " " ] && COMP_CWORD=${#COMP_WORDS[@]}
hydra_bash_completion
printf '%s\n' "${COMPREPLY[@]}"
'''

    def _complete(line: str) -> list[str]:
        r = run_bounded(["bash", "-c", script, "bash", line], env=env, cwd=REPO, timeout=300)
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stdout.split()

    return _complete


def test_bash_completes_groups_options_and_keys(complete):
    assert {"policy=act", "policy=diffusion", "policy=vqbet"} <= set(complete("python src/train.py policy="))
    assert "experiment=nerfacto_quickstart" in complete("python src/train.py experiment=nerf")
    assert complete("python src/train.py policy=act machine.num_thr") == ["machine.num_threads="]


def test_readme_commands_are_written_the_way_completion_reads_them():
    """Hydra's bash completion answers for `python <script>` typed in the repository root (the README's
    venv is activated first), not for `.venv/bin/python` or `python3`."""
    text = (REPO / "README.md").read_text()
    blocks = re.findall(r"```bash\n(.*?)```", text, flags=re.S)
    commands = [c.strip() for block in blocks for line in block.splitlines()
                for c in re.split(r"&&|;", line.split("#")[0]) if re.search(r"src/\w+\.py", c)]
    assert len(commands) > 20
    for command in commands:
        command = command.removeprefix('eval "$(').removeprefix("time ")
        assert command.startswith("python src/"), command
