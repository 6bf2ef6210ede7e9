"""The online buffer: capacity and eviction, the LeRobotDataset item layout (checked against the reader on
its own export), the sampling ratio of mixed batches and their resume, and the buffer's place in a
checkpoint (hard links under the manifest, an exact restore, damaged or planted files refused)."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf

from config.schemas import ImageTransformsConfig
from data.device_images import DeviceImages
from data.lerobot_dataset import LeRobotDataset
from data.online_buffer import FOLDER, OnlineBuffer, OnlineBufferError, chunk_name
from data.transforms import build_image_transforms
from training import checkpoint as ckpt_lib
from training.data_position import BatchStream
from training.online.mixing import MixedBatches

FEATURES = {
    "observation.image": {"dtype": "image", "shape": [4, 5, 3]},
    "observation.state": {"dtype": "float32", "shape": [2]},
    "action": {"dtype": "float32", "shape": [2]},
    "next.reward": {"dtype": "float32", "shape": [1]},
    "next.done": {"dtype": "bool", "shape": [1]},
    "next.success": {"dtype": "bool", "shape": [1]},
}


def episode(steps: int, base: float) -> dict[str, np.ndarray]:
    """`steps` env steps as the rollout recorder gives them: steps + 1 frames, the last one the final
    observation with the last step's action and next.* repeated. Values encode (base, frame)."""
    t = np.arange(steps + 1, dtype=np.float32)
    action = np.stack([base + t, -t], axis=1)
    action[-1] = action[-2]
    image = (np.arange(4 * 5 * 3).reshape(4, 5, 3)[None] + t[:, None, None, None] + base) % 256
    done = np.zeros(steps + 1, bool)
    done[-2:] = True
    return {"observation.image": image.astype(np.uint8), "observation.state": np.stack([base + t, t], axis=1),
            "action": action, "next.reward": np.r_[t[:-1] / 10, t[-2] / 10].astype(np.float32),
            "next.done": done, "next.success": np.zeros(steps + 1, bool)}


def buffer(folder, capacity=None, **kwargs) -> OnlineBuffer:
    b = OnlineBuffer(folder, FEATURES, capacity, fps=10, task="push", **kwargs)
    b.clear_folder()
    return b


def add(b: OnlineBuffer, chunk_id: int, *episodes) -> None:
    b.write(chunk_id, list(episodes))
    b.append(chunk_id)


def test_capacity_keeps_the_newest_frames_and_deletes_spent_chunks(tmp_path):
    b = buffer(tmp_path / "buf", capacity=10)
    add(b, 0, episode(3, 0), episode(4, 100))  # 4 + 5 frames
    assert (len(b), b.head, b.num_episodes) == (9, 0, 2)
    add(b, 1, episode(5, 200))  # 6 frames: 15 > 10, the 5 oldest go
    assert (len(b), b.head, b.next_index) == (10, 5, 15)
    assert b.num_episodes == 2  # episode 0 is gone, episode 1 lost its first frame
    with pytest.raises(IndexError):
        b.item(4)
    first = b.item(5)
    assert (int(first["episode_index"]), int(first["frame_index"])) == (1, 1)
    assert (tmp_path / "buf" / chunk_name(0)).is_dir()  # still holds kept frames
    add(b, 2, episode(5, 300))
    assert (len(b), b.head) == (10, 11)
    assert sorted(p.name for p in (tmp_path / "buf").iterdir()) == [chunk_name(1), chunk_name(2)]
    assert not any(k.startswith(chunk_name(0)) for k in b.hashes)
    # a sample never starts on a final-observation frame, nor on an evicted one
    assert b._table()["starts"].tolist() == [11, 12, 13, 15, 16, 17, 18, 19]  # 14 and 20: final observations


def test_an_unbounded_buffer_keeps_everything(tmp_path):
    b = buffer(tmp_path / "buf")
    for i in range(3):
        add(b, i, episode(2, 10 * i))
    assert (len(b), b.head, b.num_episodes, b.num_sampleable) == (9, 0, 3, 6)


def test_items_match_the_dataset_reader_on_the_buffers_export(tmp_path):
    """The same frames through LeRobotDataset (the buffer exported, PNG images) and through the buffer:
    the same keys, dtypes, shapes, windows and padding, for every frame a sample can start at."""
    deltas = {"observation.image": [-1, 0], "observation.state": [-1, 0], "action": [-1, 0, 1, 2, 3],
              "next.reward": [0, 1]}
    b = buffer(tmp_path / "buf", delta_indices=deltas)
    add(b, 0, episode(4, 0), episode(6, 50))
    add(b, 1, episode(3, 150))
    root = b.export(tmp_path / "exported", use_videos=False)
    ds = LeRobotDataset(root, delta_timestamps={k: [d / 10 for d in v] for k, v in deltas.items()})
    assert ds.episode_lengths == [4, 6, 3]  # the final observations are not exported
    online = [g for first, end in ((0, 5), (5, 12), (12, 16)) for g in range(first, end - 1)]
    assert len(online) == len(ds)
    for i, g in enumerate(online):
        want, got = ds[i], b.item(g)
        assert sorted(want) == sorted(got)
        for key in want:
            if key == "index":  # global online index vs. the export's own numbering
                continue
            if isinstance(want[key], torch.Tensor):
                assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape, key
                assert torch.equal(got[key], want[key]), (key, g)
            else:
                assert got[key] == want[key]


def test_the_final_observation_is_seen_by_observation_windows_only(tmp_path):
    b = buffer(tmp_path / "buf", delta_indices={"observation.state": [0, 1], "action": [0, 1]})
    add(b, 0, episode(3, 0))  # frames 0..3, frame 3 the final observation
    item = b.item(2)  # the last step
    assert item["observation.state_is_pad"].tolist() == [False, False]
    assert item["observation.state"][:, 0].tolist() == [2.0, 3.0]
    assert item["action_is_pad"].tolist() == [False, True]
    assert item["action"][:, 0].tolist() == [2.0, 2.0]
    assert b._table()["starts"].tolist() == [0, 1, 2]
    b2 = buffer(tmp_path / "buf2", drop_n_last_frames=2)
    add(b2, 0, episode(3, 0))
    assert b2._table()["starts"].tolist() == [0]


def _offline(tmp_path, batch_size: int) -> BatchStream:
    """An offline dataset whose states are < 1000 (the buffer's below are >= 1000)."""
    src = buffer(tmp_path / "src")
    add(src, 0, *(episode(9, 10 * i) for i in range(4)))
    ds = LeRobotDataset(src.export(tmp_path / "offline", use_videos=False))
    return BatchStream(ds, batch_size, seed=3)


@pytest.mark.parametrize("ratio", [0.3, 0.5, 1.0])
def test_mixed_batches_draw_the_sampling_ratio_and_resume_exactly(tmp_path, ratio):
    b = buffer(tmp_path / "buf")
    add(b, 0, episode(7, 1000), episode(5, 2000))
    offline = _offline(tmp_path, 4)
    mixed = MixedBatches(offline, b, batch_size=4, sampling_ratio=ratio, seed=7)
    stream = iter(mixed)
    first = next(stream)  # offline phase: a plain offline batch
    assert (first["observation.state"][:, 0] < 1000).all() and "task" in first
    mixed.online = True
    counts, saved, after = [], None, []
    for j in range(20):
        batch = next(stream)
        counts.append(int((batch["observation.state"][:, 0] >= 1000).sum()))
        assert batch["observation.state"].shape == (4, 2) and batch["action"].dtype == torch.float32
        if j == 9:
            saved = mixed.state_dict()
        if j >= 10:
            after.append(batch)
    assert sum(counts) == int(20 * 4 * ratio) and max(counts) - min(counts) <= 1
    assert mixed.take_share() == pytest.approx((sum(counts)) / 84)
    # a fresh stream from the saved position gives the same batches
    again = MixedBatches(_offline(tmp_path / "again", 4), b, batch_size=4, sampling_ratio=ratio, seed=7)
    again.load_state_dict(saved)
    again.online = True
    stream = iter(again)
    for want in after:
        got = next(stream)
        assert all(torch.equal(got[k], want[k]) for k in want if isinstance(want[k], torch.Tensor))


def _saved(tmp_path, b: OnlineBuffer) -> object:
    """A real checkpoint (tiny model) holding `b`'s chunks, as the trainer saves one."""
    model = torch.nn.Linear(2, 2)
    state = {"step": 1, "online": {"buffer": b.state_dict()}}
    return ckpt_lib.save_checkpoint(tmp_path / "run", 1, model, state, "a: 1\n", "policy: diffusion\n",
                                    extra_files=b.checkpoint_files())


def test_a_checkpoint_links_the_buffer_and_a_restore_is_exact(tmp_path):
    b = buffer(tmp_path / "run" / FOLDER, capacity=12)
    add(b, 0, episode(4, 0))
    add(b, 1, episode(5, 100))
    b.write(2, [episode(2, 200)])  # a finished async rollout, not in the buffer yet
    ckpt = _saved(tmp_path, b)
    ckpt_lib.verify(ckpt)
    listed = ckpt_lib.manifest_entries(ckpt)
    rel = f"{chunk_name(1)}/observation.image.npy"
    assert f"{FOLDER}/{rel}" in listed and f"{FOLDER}/{chunk_name(2)}/action.npy" in listed
    assert os.stat(ckpt / FOLDER / rel).st_ino == os.stat(b.folder / rel).st_ino  # a link, not a copy
    before = {g: b.item(g) for g in range(b.head, b.next_index)}

    add(b, 3, episode(6, 300))  # the run goes on after its checkpoint, then is killed
    restored = OnlineBuffer(tmp_path / "run" / FOLDER, FEATURES, 12, fps=10, task="push")
    restored.load_state_dict(_load_state(ckpt), ckpt / FOLDER, listed)
    assert sorted(p.name for p in restored.folder.iterdir()) == [chunk_name(0), chunk_name(1), chunk_name(2)]
    assert (restored.head, restored.next_index, restored.pending) == (0, 11, {2: [3]})
    for g, want in before.items():
        got = restored.item(g)
        assert all(torch.equal(got[k], want[k]) for k in want if isinstance(want[k], torch.Tensor))
    restored.append(2)
    assert len(restored) == 12 and restored.head == 2


def _load_state(ckpt):
    return ckpt_lib.load_training_state(ckpt)["online"]["buffer"]


def test_damaged_or_planted_buffer_files_are_refused(tmp_path):
    b = buffer(tmp_path / "run" / FOLDER)
    add(b, 0, episode(3, 0))
    ckpt = _saved(tmp_path, b)
    target = ckpt / FOLDER / chunk_name(0) / "action.npy"
    data = np.load(target)
    os.unlink(target)  # break the hard link, as an editor would
    np.save(target, data + 1)
    with pytest.raises(ckpt_lib.CheckpointError, match="action.npy does not match the SHA-256"):
        ckpt_lib.verify(ckpt)
    fresh = OnlineBuffer(tmp_path / "fresh", FEATURES, None, fps=10)
    # an attacker re-seals the manifest: a pickled object array, a wrong shape, an unlisted chunk
    np.save(target, np.array([{"x": 1}] * 4, dtype=object), allow_pickle=True)
    ckpt_lib.write_manifest(ckpt)
    with pytest.raises(OnlineBufferError, match="action.npy: not a readable .npy file"):
        fresh.load_state_dict(_load_state(ckpt), ckpt / FOLDER, ckpt_lib.manifest_entries(ckpt))
    np.save(target, data[:2])
    ckpt_lib.write_manifest(ckpt)
    with pytest.raises(OnlineBufferError, match=r"action.npy: holds float32 \[2, 2\] where the buffer keeps"):
        fresh.load_state_dict(_load_state(ckpt), ckpt / FOLDER, ckpt_lib.manifest_entries(ckpt))
    listed = {k: v for k, v in ckpt_lib.manifest_entries(ckpt).items() if "action" not in k}
    with pytest.raises(OnlineBufferError, match="manifest does not list it"):
        fresh.load_state_dict(_load_state(ckpt), ckpt / FOLDER, listed)
    state = _load_state(ckpt)
    state["chunks"][0][1] = 5  # counters that do not add up
    with pytest.raises(OnlineBufferError, match="its counters do not match its chunks"):
        fresh.load_state_dict(state, ckpt / FOLDER, ckpt_lib.manifest_entries(ckpt))
    state = _load_state(ckpt)
    state["features"] = {"../x": {"dtype": "float32", "shape": [1]}}
    with pytest.raises(OnlineBufferError, match="cannot be an online buffer feature"):
        fresh.load_state_dict(state, ckpt / FOLDER, ckpt_lib.manifest_entries(ckpt))
    assert not (tmp_path / "fresh").exists()  # nothing linked from a refused checkpoint


def test_mixed_batches_with_uint8_transport_augment_on_the_device_as_in_the_loader(tmp_path):
    """machine.uint8_transport: offline and buffer frames travel uint8 with their items' seeds, and the
    device-side conversion and augmentation give the float batches of the loader path, bit for bit."""
    src = buffer(tmp_path / "src")
    add(src, 0, *(episode(9, 10 * i) for i in range(4)))
    exported = src.export(tmp_path / "offline", use_videos=False)

    def mixed(transport: bool) -> list[dict]:
        tfs = build_image_transforms(OmegaConf.structured(
            ImageTransformsConfig(enable=True, max_num_transforms=3, random_order=True)))
        ds = LeRobotDataset(exported, image_transforms=None if transport else tfs, uint8_images=transport)
        online = buffer(tmp_path / f"buf{transport}", image_transforms=None if transport else tfs,
                        uint8_images=transport)
        add(online, 0, episode(7, 1000), episode(5, 2000))
        stream = MixedBatches(BatchStream(ds, 4, seed=3, tag_seeds=transport), online, batch_size=4,
                              sampling_ratio=0.5, seed=7, tag_seeds=transport)
        stream.online = True
        to_device = DeviceImages(["observation.image"], tfs if transport else None)
        batches = iter(stream)
        return [to_device(next(batches), torch.device("cpu")) for _ in range(3)]

    for want, got in zip(mixed(False), mixed(True)):
        assert (got["observation.state"][:, 0] >= 1000).sum() == 2  # half of each batch from the buffer
        torch.testing.assert_close(got["observation.image"], want["observation.image"], rtol=0, atol=0)
