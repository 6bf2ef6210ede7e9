"""VQ-BeT end to end on a tiny config: both training phases in one run, exact resume from a
checkpoint inside each phase, evaluation by train.py and eval.py, LeRobot's flags, bad values."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from safetensors.torch import load_file

from helpers import copy_as_killed_after, one_error_line, read_metrics, run_train

pytestmark = pytest.mark.slow

# 3 VQ-VAE steps then GPT steps; a 2-layer GPT of width 16 and 48x48 crops keep a step well under a second.
TINY_VQBET = [
    "policy.n_obs_steps=2", "policy.n_action_pred_token=2", "policy.action_chunk_size=3",
    "policy.n_vqvae_training_steps=3", "policy.vqvae_n_embed=8", "policy.vqvae_embedding_dim=16",
    "policy.vqvae_enc_hidden_dim=16", "policy.gpt_block_size=16", "policy.gpt_input_dim=16",
    "policy.gpt_output_dim=16", "policy.gpt_n_layer=1", "policy.gpt_n_head=2", "policy.gpt_hidden_dim=16",
    "policy.crop_shape=[48,48]", "policy.spatial_softmax_num_keypoints=4", "scheduler.num_warmup_steps=1",
]


def vqbet_overrides(pusht_root: Path, run_dir: Path, *extra: str) -> list[str]:
    return ["policy=vqbet", "env=pusht", "logger=none", "machine.device_type=cpu", "progress_bar=false",
            f"dataset.root={pusht_root}", "steps=6", "batch_size=4", "num_workers=0", "log_freq=1",
            "save_freq=2", "eval_freq=0", "eval.n_episodes=1", "eval.batch_size=1", "env.episode_length=10",
            f"hydra.run.dir={run_dir}", *TINY_VQBET, *extra]


def _weights(ckpt: Path) -> dict:
    return load_file(str(ckpt / "model.safetensors"))


def test_two_phases_resume_exactly_inside_each_and_evaluate(tmp_path, pusht_root):
    full = tmp_path / "full"
    r = run_train(vqbet_overrides(pusht_root, full, "eval_freq=6"))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = read_metrics(full)
    train = {m["step"]: m for m in lines if "train/loss" in m}
    # steps 1-3 train the VQ-VAE (codes in use are logged), 4-6 the GPT (code and offset losses)
    assert all("train/n_different_codes" in train[s] and "train/offset_loss" not in train[s] for s in (1, 2, 3))
    assert all("train/offset_loss" in train[s] and "train/n_different_codes" not in train[s] for s in (4, 5, 6))
    assert 1 <= train[1]["train/n_different_codes"] <= 2 * 8
    # the vqbet schedule (lr logged after each step: the next step's): constant through the VQ-VAE
    # phase, then a warmup from 0 (1 step) and the cosine
    assert [train[s]["train/lr"] for s in (1, 2, 3, 4)] == [1e-4, 1e-4, 0.0, 1e-4]
    assert 0 < train[5]["train/lr"] < 1e-4
    ev = [m for m in lines if "eval/pc_success" in m]
    assert ev and ev[0]["step"] == 6

    a = _weights(full / "checkpoints" / "000006")
    assert bool(a["action_head.vqvae_model.discretized"]) and int(a["action_head.vqvae_model.steps"]) == 3
    phase1 = _weights(full / "checkpoints" / "000002")
    assert not bool(phase1["action_head.vqvae_model.discretized"])
    for step in (2, 4):  # inside the VQ-VAE phase, and inside the GPT phase
        part = copy_as_killed_after(full, tmp_path / f"part{step}", step)
        r = run_train(vqbet_overrides(pusht_root, part, "resume=true"))
        assert r.returncode == 0, r.stderr[-3000:]
        b = _weights(part / "checkpoints" / "000006")
        assert a.keys() == b.keys()
        for k in a:
            assert (a[k].double() - b[k].double()).abs().max() <= 1e-6, (step, k)
    # the GPT phase moved the GPT and left the VQ-VAE as it ended
    c = _weights(full / "checkpoints" / "000004")
    assert (a["policy.lm_head.weight"] - c["policy.lm_head.weight"]).abs().max() > 1e-6
    for k in a:
        if k.startswith("action_head.vqvae_model."):
            assert (a[k].double() - c[k].double()).abs().max() == 0, k

    out = tmp_path / "eval_only"
    r = run_train([f"checkpoint={full}", f"output_dir={out}", "eval.n_episodes=1", "eval.batch_size=1"],
                  script="eval.py")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "eval.json").read_text())["step"] == 6


def test_lerobot_flags_two_ranks_across_the_phase_switch_and_bad_values(tmp_path, pusht_root):
    """LeRobot's flags, on 2 data-parallel ranks: step 1 trains the VQ-VAE, step 2 the GPT (each
    phase leaves parameters without gradients, which the policy declares to DDP)."""
    run = tmp_path / "flags"
    args = ["--policy.type=vqbet", "--env.type=pusht", "--offline.steps=2", "--policy.n_vqvae_training_steps=1",
            *vqbet_overrides(pusht_root, run, "machine.num_devices=2")[2:]]
    args = [a for a in args if not a.startswith(("steps=", "policy.n_vqvae_training_steps="))]
    r = run_train(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "translated: python src/train.py policy=vqbet env=pusht steps=2 policy.n_vqvae_training_steps=1" in r.stderr
    weights = _weights(run / "checkpoints" / "000002")
    assert bool(weights["action_head.vqvae_model.discretized"]) and int(weights["action_head.vqvae_model.steps"]) == 1
    metrics = read_metrics(run)
    assert [("train/n_different_codes" in m, "train/offset_loss" in m) for m in metrics if "train/loss" in m] == [
        (True, False), (False, True)]

    line = one_error_line(run_train(vqbet_overrides(pusht_root, tmp_path / "bad", "policy.gpt_n_head=3")))
    assert "policy.gpt_hidden_dim=16 is not divisible by policy.gpt_n_head=3" in line
    assert not (tmp_path / "bad").exists()
