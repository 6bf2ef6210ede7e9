"""Normalizer: modes per feature type, stats buffers in the state_dict, clear errors."""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from models.common.normalize import Normalizer

FEATURES = {
    "observation.image": {"type": "VISUAL", "shape": (3, 8, 8)},
    "observation.state": {"type": "STATE", "shape": (2,)},
    "observation.environment_state": {"type": "ENV", "shape": (3,)},
    "action": {"type": "ACTION", "shape": (2,)},
}
MAPPING = {"VISUAL": "MEAN_STD", "STATE": "MIN_MAX", "ACTION": "MIN_MAX"}
STATS = {
    "observation.image": {"mean": np.array([0.1, 0.2, 0.3]).reshape(3, 1, 1), "std": np.full((3, 1, 1), 0.5)},
    "observation.state": {"min": np.array([0.0, -10.0]), "max": np.array([100.0, 10.0])},
    "action": {"min": torch.tensor([0.0, 0.0]), "max": torch.tensor([512.0, 512.0])},
}


def test_modes_and_inverse():
    norm = Normalizer(FEATURES, MAPPING, STATS)
    batch = {
        "observation.image": torch.rand(4, 2, 3, 8, 8),
        "observation.state": torch.tensor([[0.0, -10.0], [100.0, 10.0]]),
        "observation.environment_state": torch.rand(2, 3),
        "action": torch.rand(2, 5, 2) * 512,
        "index": torch.arange(2),
    }
    out = norm.normalize(batch)
    torch.testing.assert_close(out["observation.state"], torch.tensor([[-1.0, -1.0], [1.0, 1.0]]))
    expected_image = (batch["observation.image"] - torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1)) / 0.5
    torch.testing.assert_close(out["observation.image"], expected_image)
    assert out["observation.environment_state"] is batch["observation.environment_state"]  # ENV unmapped: identity
    assert out["index"] is batch["index"]
    assert out["action"].min() >= -1 and out["action"].max() <= 1
    torch.testing.assert_close(norm.unnormalize({"action": out["action"]})["action"], batch["action"])
    assert "observation.state" in batch and batch["observation.state"] is not out["observation.state"]


def test_stats_are_buffers_saved_with_safetensors(tmp_path):
    norm = Normalizer(FEATURES, MAPPING, STATS)
    assert len(list(norm.parameters())) == 0
    save_file(norm.state_dict(), str(tmp_path / "n.safetensors"))
    loaded = load_file(str(tmp_path / "n.safetensors"))
    assert loaded["stats.buffer_observation_image.mean"].shape == (3, 1, 1)
    empty = Normalizer(FEATURES, MAPPING, None)
    with pytest.raises(RuntimeError, match="observation.image"):
        empty.normalize({"action": torch.zeros(2)})
    empty.load_state_dict(loaded)
    torch.testing.assert_close(empty.normalize({"action": torch.zeros(2)})["action"], torch.full((2,), -1.0))


def test_missing_or_bad_stats_name_the_key():
    with pytest.raises(KeyError, match="'action'"):
        Normalizer(FEATURES, MAPPING, {k: v for k, v in STATS.items() if k != "action"})
    with pytest.raises(KeyError, match="lack 'std'"):
        Normalizer(FEATURES, MAPPING, {**STATS, "observation.image": {"mean": np.zeros((3, 1, 1))}})
    with pytest.raises(ValueError, match="NaN"):
        Normalizer(FEATURES, MAPPING, {**STATS, "action": {"min": np.zeros(2), "max": np.array([1.0, np.nan])}})
    with pytest.raises(ValueError, match="shape"):
        Normalizer(FEATURES, MAPPING, {**STATS, "action": {"min": np.zeros(3), "max": np.ones(3)}})


def test_identity_needs_no_stats():
    norm = Normalizer(FEATURES, {"STATE": "IDENTITY"}, {})
    x = torch.rand(3, 2)
    assert norm.normalize({"observation.state": x})["observation.state"] is x


def test_moves_and_casts_like_any_module():
    norm = Normalizer(FEATURES, MAPPING, STATS).to(torch.float64)
    assert norm.stats["buffer_action"].min.dtype == torch.float64
    out = norm.normalize({"action": torch.zeros(2, dtype=torch.float64)})["action"]
    assert out.dtype == torch.float64
