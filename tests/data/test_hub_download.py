"""`dataset.local_files_only=false`: a dataset missing at its root is fetched from the Hugging Face
Hub (LeRobot's behaviour). No hub is reachable here, so `snapshot_download` is replaced by a fake
that serves a dataset this test writes; everything around it (arguments, the temporary folder, the
rename, the errors) is the real code."""

from __future__ import annotations

import shutil

import huggingface_hub
import pytest
from omegaconf import OmegaConf

from config.schemas import DatasetConfig
from data.demos import ensure_dataset
from data.errors import DatasetError
from data.lerobot_dataset import LeRobotDatasetMetadata
from lerobot_synthetic import LENGTHS, one_line, write_dataset


def _cfg(root, **kw):
    return OmegaConf.structured(DatasetConfig(repo_id="lerobot/pusht", root=str(root), demos=None, **kw))


def test_a_missing_dataset_is_downloaded_into_place(tmp_path, monkeypatch):
    source = write_dataset(tmp_path / "hub")
    calls = []

    def fake_snapshot_download(repo_id, *, repo_type, revision, local_dir, **_):
        calls.append((repo_id, repo_type, revision))
        assert not (tmp_path / "data" / "pusht").exists()  # downloads land beside the root, not in it
        shutil.copytree(source, local_dir)
        return str(local_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    root = ensure_dataset(_cfg(tmp_path / "data" / "pusht", local_files_only=False, revision="v2.1"))
    assert calls == [("lerobot/pusht", "dataset", "v2.1")]
    assert LeRobotDatasetMetadata(root).total_frames == sum(LENGTHS)
    assert sorted(p.name for p in (tmp_path / "data").iterdir()) == ["pusht"]  # no temporary folder left
    ensure_dataset(_cfg(root, local_files_only=False))  # present now: not fetched again
    assert len(calls) == 1


def test_a_refused_download_is_one_line_and_leaves_nothing(tmp_path, monkeypatch):
    def refused(repo_id, **kw):
        (kw["local_dir"] / "meta").mkdir(parents=True)  # a partial download
        raise OSError("404 Client Error: Repository Not Found for url")  # what a refused request ends as

    monkeypatch.setattr(huggingface_hub, "snapshot_download", refused)
    with pytest.raises(DatasetError) as err:
        ensure_dataset(_cfg(tmp_path / "pusht", local_files_only=False))
    msg = one_line(err)
    assert "could not download lerobot/pusht" in msg and "Repository Not Found" in msg and "dataset.root" in msg
    assert list(tmp_path.iterdir()) == []


def test_local_files_only_says_how_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setattr(huggingface_hub, "snapshot_download", lambda *a, **k: pytest.fail("must not download"))
    with pytest.raises(DatasetError) as err:
        ensure_dataset(_cfg(tmp_path / "pusht"))
    assert "dataset.local_files_only=false" in one_line(err)
