"""PyAV is needed only for video: a dataset recorded with `use_videos=false` is written, read and trained
on where `import av` fails (a GPU image without PyAV's wheel, a slim container)."""

from __future__ import annotations

import pytest

from helpers import read_metrics, run_train, tiny_overrides

pytestmark = pytest.mark.slow


def test_an_image_dataset_records_and_trains_without_pyav(tmp_path):
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "av.py").write_text("raise ImportError('PyAV is blocked for this test')\n")
    env = {"PYTHONPATH": str(blocker), "HYDRABOT_HOME": str(tmp_path / "home")}
    run = tmp_path / "run"
    args = [a for a in tiny_overrides(tmp_path / "data", run, "steps=2") if not a.startswith("dataset.root=")]
    r = run_train([*args, "dataset.demos.n_episodes=1", "dataset.demos.use_videos=false"],
                  env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    assert [m["step"] for m in read_metrics(run) if "train/loss" in m] == [2]
    # the blocker did apply: a video dataset cannot be recorded in the same process state
    r = run_train([*args, "dataset.demos.n_episodes=1", f"hydra.run.dir={tmp_path / 'video'}",
                   "dataset.repo_id=local/pusht_video"],
                  env=env)
    assert r.returncode != 0 and "PyAV is blocked" in r.stderr
