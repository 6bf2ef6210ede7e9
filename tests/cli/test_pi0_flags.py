"""LeRobot's pi0 flags (`--policy.type=pi0` and every option of its PI0Config section, training preset
included) translate into overrides that compose to the values given, on ALOHA."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from cli.entry import env_dataset
from cli.seed_flags import LEROBOT, translate_argv
from helpers import CONF_DIR

# flag -> (words after it, the key it must set, the value it must have there)
PI0_FLAGS = {
    "--policy.n_obs_steps": (["1"], "policy.n_obs_steps", 1),
    "--policy.normalization_mapping": (['{"STATE": "MIN_MAX"}'], "policy.normalization_mapping.STATE", "MIN_MAX"),
    "--policy.chunk_size": (["20"], "policy.chunk_size", 20),
    "--policy.n_action_steps": (["10"], "policy.n_action_steps", 10),
    "--policy.max_state_dim": (["24"], "policy.max_state_dim", 24),
    "--policy.max_action_dim": (["24"], "policy.max_action_dim", 24),
    "--policy.resize_imgs_with_padding": (["112", "112"], "policy.resize_imgs_with_padding", [112, 112]),
    "--policy.empty_cameras": (["2"], "policy.empty_cameras", 2),
    "--policy.adapt_to_pi_aloha": (["true"], "policy.adapt_to_pi_aloha", True),
    "--policy.use_delta_joint_actions_aloha": (["true"], "policy.use_delta_joint_actions_aloha", True),
    "--policy.tokenizer_max_length": (["32"], "policy.tokenizer_max_length", 32),
    "--policy.proj_width": (["1024"], "policy.proj_width", 1024),
    "--policy.num_steps": (["5"], "policy.num_steps", 5),
    "--policy.use_cache": (["false"], "policy.use_cache", False),
    "--policy.attention_implementation": (["sdpa"], "policy.attention_implementation", "sdpa"),
    "--policy.freeze_vision_encoder": (["true"], "policy.freeze_vision_encoder", True),
    "--policy.train_expert_only": (["true"], "policy.train_expert_only", True),
    "--policy.train_state_proj": (["false"], "policy.train_state_proj", False),
    "--policy.optimizer_lr": (["1e-5"], "optimizer.lr", 1e-5),
    "--policy.optimizer_betas": (["0.9", "0.99"], "optimizer.betas", [0.9, 0.99]),
    "--policy.optimizer_eps": (["1e-6"], "optimizer.eps", 1e-6),
    "--policy.optimizer_weight_decay": (["1e-4"], "optimizer.weight_decay", 1e-4),
    "--policy.scheduler_warmup_steps": (["100"], "scheduler.num_warmup_steps", 100),
    "--policy.scheduler_decay_steps": (["3000"], "scheduler.num_decay_steps", 3000),
    "--policy.scheduler_decay_lr": (["1e-6"], "scheduler.decay_lr", 1e-6),
}
FROM_DATASET = {"--policy.input_features", "--policy.output_features"}


def test_every_pi0_flag_of_the_seed_is_covered():
    assert {f for f, seed in LEROBOT.items() if "pi0" in seed.owners} == set(PI0_FLAGS) | FROM_DATASET


def test_pi0_flags_compose_to_their_values(compose):
    args = ["--policy.type=pi0", "--env.type=aloha"]
    for flag, (words, _, _) in PI0_FLAGS.items():
        args += [flag, *words]
    overrides, notes = translate_argv(args)
    assert notes[-1].startswith("translated: python src/train.py policy=pi0 env=aloha")
    cfg = compose(env_dataset(overrides, CONF_DIR))
    assert cfg.dataset.repo_id == "local/aloha_insertion_scripted" and cfg.env.type == "aloha"
    for flag, (_, key, value) in PI0_FLAGS.items():
        assert OmegaConf.select(cfg, key) == value, flag
    assert cfg.scheduler.peak_lr == 1e-5  # the preset's peak follows the optimizer's lr
    OmegaConf.to_object(cfg.policy)  # and the policy's own checks pass


def test_pi0_defaults_are_lerobots(compose):
    cfg = compose(["policy=pi0", "env=aloha", "dataset=aloha_insertion"])
    p = cfg.policy
    assert (p.chunk_size, p.n_action_steps, p.max_state_dim, p.max_action_dim, p.tokenizer_max_length,
            p.proj_width, p.num_steps) == (50, 50, 32, 32, 48, 1024, 10)
    assert list(p.resize_imgs_with_padding) == [224, 224] and p.use_cache and p.attention_implementation == "eager"
    assert p.freeze_vision_encoder and not p.train_expert_only and p.train_state_proj
    assert (p.paligemma_variant, p.action_expert_variant) == ("gemma_2b", "gemma_300m")
    assert cfg.optimizer._target_ == "torch.optim.AdamW" and cfg.optimizer.lr == 2.5e-5
    assert list(cfg.optimizer.betas) == [0.9, 0.95] and cfg.optimizer.weight_decay == 1e-10
    assert cfg.scheduler._target_ == "training.schedulers.cosine_decay_with_warmup"
    assert (cfg.scheduler.num_warmup_steps, cfg.scheduler.num_decay_steps, cfg.scheduler.decay_lr) == (
        1000, 30000, 2.5e-6)


@pytest.mark.parametrize("override, expected", [
    ("policy.proj_width=512", "policy.proj_width=512 differs from the width 1024 of policy.action_expert_variant="
                              "gemma_300m"),
    ("policy.attention_implementation=fa2", "policy.attention_implementation=fa2 needs the flash-attn package"),
    ("policy.resize_imgs_with_padding=[224,112]", "must be square"),
    ("policy.pretrained_path=/nowhere/pi0", "policy.pretrained_path=/nowhere/pi0 is not a directory"),
    ("policy.paligemma_variant=gemma_7b", "policy.paligemma_variant='gemma_7b' is not one of gemma_2b, gemma_300m, tiny"),
    ("policy.n_action_steps=60", "policy.n_action_steps=60 exceeds policy.chunk_size=50"),
])
def test_bad_pi0_options_are_one_line_and_create_nothing(override, expected, tmp_path, capsys):
    from cli.entry import prepare_argv
    from config.store import register_schemas

    if "fa2" in override and __import__("importlib.util").util.find_spec("flash_attn") is not None:
        pytest.skip("flash-attn is installed here")
    register_schemas()
    args = ["train.py", "policy=pi0", "env=aloha", override, f"hydra.run.dir={tmp_path / 'run'}"]
    with pytest.raises(SystemExit) as exit_info:
        prepare_argv(args, CONF_DIR, "train")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "run").exists()
