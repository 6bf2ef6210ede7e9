"""nerfstudio's run options, root keys of both families: save_only_latest_checkpoint, relative_model_dir,
use_grad_scaler and log_gradients, on the toy pipeline."""

from __future__ import annotations

import math

import pytest
import torch
from omegaconf import OmegaConf

from toy_pipeline import ToyPipeline
from tracking.base import NullTracker
from training import checkpoint as ck
from training.loop import LoopConfig, Trainer
from helpers import read_metrics

SGD = OmegaConf.create({"_target_": "torch.optim.SGD", "lr": 0.1, "grad_clip_norm": 0.0})


def _trainer(run_dir, pipeline, optimizer=SGD, **loop):
    tracker = NullTracker()
    tracker.start(run_dir, params={}, tags={})
    cfg = {"steps": 1, "log_freq": 1, "progress_bar": False, **loop}
    return Trainer(LoopConfig(**cfg), pipeline, optimizer, None, tracker, run_dir, torch.device("cpu"), "x: 1\n")


def test_save_only_latest_checkpoint_keeps_one_step_folder_and_last(tmp_path):
    _trainer(tmp_path, ToyPipeline(batch_size=4), steps=7, save_freq=2, save_only_latest_checkpoint=True).fit()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["000007", "last"]
    assert ck.last_checkpoint(tmp_path).name == "000007"
    resumed = _trainer(tmp_path / "again", ToyPipeline(batch_size=4), steps=7)
    assert resumed.restore(ck.last_checkpoint(tmp_path))["step"] == 7
    # the default keeps every checkpoint
    _trainer(tmp_path / "all", ToyPipeline(batch_size=4), steps=4, save_freq=2).fit()
    assert sorted(p.name for p in (tmp_path / "all" / "checkpoints").iterdir()) == ["000002", "000004", "last"]


def test_relative_model_dir_moves_the_checkpoints_and_every_reader_finds_them(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("relative_model_dir: nerfstudio_models\nsteps: 4\n")  # as train.py writes it
    _trainer(run, ToyPipeline(batch_size=4), steps=4, save_freq=2, relative_model_dir="nerfstudio_models").fit()
    assert not (run / "checkpoints").exists()
    assert sorted(p.name for p in (run / "nerfstudio_models").iterdir()) == ["000002", "000004", "last"]
    newest = run / "nerfstudio_models" / "000004"
    assert ck.last_checkpoint(run) == newest.resolve()  # resume=true (and a requeued job) read the run's config
    assert ck.resolve_checkpoint(run) == newest.resolve()  # eval.py / render.py checkpoint=<run>
    assert ck.warm_start_checkpoint(str(run), None, None) == newest.resolve()  # load_dir=<run>
    assert ck.warm_start_checkpoint(str(run), 2, None).name == "000002"  # load_dir=<run> load_step=2
    assert ck.warm_start_checkpoint(str(run / "nerfstudio_models"), 2, None).name == "000002"
    assert ck.run_dir_of(newest, "nerfstudio_models") == run
    assert ck.run_dir_of(run / "a" / "b" / "000004", "a/b") == run


@pytest.mark.parametrize("bad", ["/abs/models", "../outside", ".", ""])
def test_relative_model_dir_must_stay_inside_the_run(tmp_path, bad):
    with pytest.raises(ck.CheckpointError, match="relative_model_dir=.*must name a folder inside the run"):
        _trainer(tmp_path, ToyPipeline(batch_size=4), relative_model_dir=bad)


def test_use_grad_scaler_scales_the_loss_without_amp_and_changes_nothing_else(tmp_path):
    plain, scaled = ToyPipeline(batch_size=4), ToyPipeline(batch_size=4)
    _trainer(tmp_path / "a", plain, steps=3).fit()
    trainer = _trainer(tmp_path / "b", scaled, steps=3, use_grad_scaler=True)
    assert trainer.scaler.is_enabled() and not _trainer(tmp_path / "c", ToyPipeline(batch_size=4)).scaler.is_enabled()
    trainer.fit()
    assert trainer.training_state()["scaler"]["scale"] == 2.0 ** 16  # saved with the checkpoint
    for p, q in zip(plain.model.parameters(), scaled.model.parameters()):
        assert torch.equal(p, q)  # a power-of-two scale is undone exactly


class TwoGroups(ToyPipeline):
    """The toy model with its weight and bias in two named optimizer groups (as nerfacto's are)."""

    def optim_params(self):
        return {"weight": [self.model.weight], "bias": [self.model.bias]}


GROUPED = OmegaConf.create({g: {"_target_": "torch.optim.SGD", "lr": 0.1, "max_norm": None} for g in ("weight", "bias")})


def test_log_gradients_logs_each_param_groups_norm_at_log_freq(tmp_path):
    pipe = TwoGroups(batch_size=4)
    reference = TwoGroups(batch_size=4)  # the same weights and the same first batch
    loss, _ = reference.loss(reference.model, next(iter(reference.batches)))
    loss.backward()
    _trainer(tmp_path, pipe, optimizer=GROUPED, steps=4, log_freq=2, log_gradients=True).fit()
    logged = [m for m in read_metrics(tmp_path) if "train/gradients/total" in m]
    assert [m["step"] for m in logged] == [2, 4]
    for m in logged:
        assert math.isclose(m["train/gradients/total"], math.hypot(m["train/gradients/weight"],
                                                                   m["train/gradients/bias"]), rel_tol=1e-9)
    _trainer(tmp_path / "first", TwoGroups(batch_size=4), optimizer=GROUPED, steps=1, log_gradients=True).fit()
    first = next(m for m in read_metrics(tmp_path / "first") if "train/gradients/total" in m)
    assert math.isclose(first["train/gradients/weight"], float(reference.model.weight.grad.norm()), rel_tol=1e-6)
    assert math.isclose(first["train/gradients/bias"], float(reference.model.bias.grad.norm()), rel_tol=1e-6)
    # a plain optimizer: its torch param groups by index; off by default
    _trainer(tmp_path / "plain", ToyPipeline(batch_size=4), steps=2, log_gradients=True).fit()
    assert {"train/gradients/0", "train/gradients/total"} <= set(read_metrics(tmp_path / "plain")[-1])
    _trainer(tmp_path / "off", ToyPipeline(batch_size=4), steps=2).fit()
    assert not any(k.startswith("train/gradients/") for m in read_metrics(tmp_path / "off") for k in m)
