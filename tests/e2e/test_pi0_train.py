"""pi0 end to end at the tiny size on the CPU: train with the dataset's language task tokenised by a
tokenizer folder, resume exactly from a checkpoint, evaluate in the env (which gives the task string)
by train.py and eval.py, and LeRobot's flags."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from helpers import read_metrics, run_train

pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

TINY_PI0 = ["policy.paligemma_variant=tiny", "policy.action_expert_variant=tiny", "policy.proj_width=32",
            "policy.resize_imgs_with_padding=[56,56]", "policy.chunk_size=4", "policy.n_action_steps=4",
            "policy.num_steps=3", "scheduler.num_warmup_steps=1", "policy.dtype=float32"]


@pytest.fixture(scope="module")
def tokenizer_dir(tmp_path_factory) -> Path:
    """A tokenizer trained on the spot and saved as a Hugging Face folder (tokenizer.json)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tokenizer")
    tokenizer = Tokenizer(models.BPE(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.BpeTrainer(vocab_size=100, special_tokens=["<pad>", "<eos>", "<bos>", "<unk>"])
    tokenizer.train_from_iterator(["Push the T-shaped block onto the T-shaped target."] * 10, trainer)
    PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token="<eos>", bos_token="<bos>",
                            unk_token="<unk>").save_pretrained(folder)
    return folder


def pi0_overrides(pusht_root: Path, run_dir: Path, tokenizer: Path, *extra: str) -> list[str]:
    return ["policy=pi0", "env=pusht", "logger=none", "machine.device_type=cpu", "progress_bar=false",
            f"dataset.root={pusht_root}", "steps=4", "batch_size=2", "num_workers=0", "log_freq=1", "save_freq=2",
            "eval_freq=0", "eval.n_episodes=1", "eval.batch_size=1", "env.episode_length=8",
            f"policy.tokenizer_path={tokenizer}", f"hydra.run.dir={run_dir}", *TINY_PI0, *extra]


def test_train_resume_exactly_and_evaluate(tmp_path, pusht_root, tokenizer_dir):
    full = tmp_path / "full"
    r = run_train(pi0_overrides(pusht_root, full, tokenizer_dir, "eval_freq=4"))
    assert r.returncode == 0, r.stderr[-3000:]
    lines = read_metrics(full)
    losses = [m["train/loss"] for m in lines if "train/loss" in m]
    assert len(losses) == 4 and all(0 < loss < 1e3 for loss in losses)
    assert [m["step"] for m in lines if "eval/pc_success" in m] == [4]
    final = load_file(str(full / "checkpoints" / "000004" / "model.safetensors"))
    first = load_file(str(full / "checkpoints" / "000002" / "model.safetensors"))
    # the vision encoder is frozen (freeze_vision_encoder=true), the expert trains
    vision = [k for k in final if ".vision_tower." in k]
    expert = [k for k in final if ".gemma_expert." in k]
    assert vision and all(torch.equal(final[k], first[k]) for k in vision)
    assert any(not torch.equal(final[k], first[k]) for k in expert)

    part = tmp_path / "part"
    shutil.copytree(full, part, symlinks=True)
    shutil.rmtree(part / "checkpoints" / "000004")
    (part / "checkpoints" / "last").unlink()
    (part / "checkpoints" / "last").symlink_to("000002")
    r = run_train(pi0_overrides(pusht_root, part, tokenizer_dir, "resume=true"))
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = load_file(str(part / "checkpoints" / "000004" / "model.safetensors"))
    assert final.keys() == resumed.keys()
    for key in final:
        assert (final[key].double() - resumed[key].double()).abs().max() <= 1e-6, key

    out = tmp_path / "eval_only"
    r = run_train([f"checkpoint={full}", f"output_dir={out}", "eval.n_episodes=1", "eval.batch_size=1"],
                  script="eval.py")
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads((out / "eval.json").read_text())["step"] == 4


def test_lerobot_flags_and_the_env_gives_the_task(tmp_path, pusht_root, tokenizer_dir):
    run = tmp_path / "flags"
    args = ["--policy.type=pi0", "--env.type=pusht", "--offline.steps=1", "--policy.train_expert_only=true",
            *pi0_overrides(pusht_root, run, tokenizer_dir)[2:]]
    args = [a for a in args if not a.startswith("steps=")]
    r = run_train(args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "translated: python src/train.py policy=pi0 env=pusht steps=1 policy.train_expert_only=true" in r.stderr
    weights = load_file(str(run / "checkpoints" / "000001" / "model.safetensors"))
    assert any(".language_model." in k for k in weights)

    from data.demos import PUSHT_TASK
    from envs.configs import PushtEnvConfig
    from envs.evaluate import evaluate_policy

    class Recorder(torch.nn.Module):
        tasks: list = []

        def reset(self):
            pass

        def select_action(self, obs):
            self.tasks.append(list(obs["task"]))
            return torch.zeros(obs["observation.state"].shape[0], 2)

    policy = Recorder()
    evaluate_policy(policy, PushtEnvConfig(episode_length=2), 2, 2, False, 0, "cpu", None, progress=False)
    assert policy.tasks == [[PUSHT_TASK, PUSHT_TASK]] * 2
    evaluate_policy(policy, PushtEnvConfig(episode_length=1, task_description="push it"), 1, 1, False, 0, "cpu",
                    None, progress=False)
    assert policy.tasks[-1] == ["push it"]
