"""The first run records the scripted demonstrations it trains on (with a progress bar) into the
cache; the next run finds them and records nothing."""

from __future__ import annotations

import pytest

from helpers import run_train, tiny_overrides

pytestmark = pytest.mark.slow


def test_demos_are_recorded_on_first_use_then_reused(tmp_path):
    home = tmp_path / "home"
    env = {"HYDRABOT_HOME": str(home)}

    def train(run: str):
        args = [a for a in tiny_overrides(tmp_path, tmp_path / run, "steps=2", "dataset.demos.n_episodes=1")
                if not a.startswith("dataset.root=")]
        return run_train(args, env=env)

    first = train("first")
    assert first.returncode == 0, first.stderr[-3000:]
    info = home / "datasets" / "local" / "pusht_scripted_quickstart" / "meta" / "info.json"  # experiment=quickstart
    assert info.is_file() and "recording PushT demos" in first.stderr
    stamp = info.stat().st_mtime_ns
    second = train("second")
    assert second.returncode == 0, second.stderr[-3000:]
    assert "recording PushT demos" not in second.stderr and info.stat().st_mtime_ns == stamp
    assert (tmp_path / "second" / "checkpoints" / "last").exists()
