"""LeRobot's TD-MPC flags (`--policy.type=tdmpc` and every `--policy.*` of its TDMPCConfig section)
translate into overrides that compose to the values given; `--env.type=xarm` trains on the xArm demos;
bad values are one line before anything is created."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from cli.entry import env_dataset
from cli.seed_flags import LEROBOT, translate_argv
from helpers import CONF_DIR

# flag -> (words after it, the key it must set, the value it must have there)
TDMPC_FLAGS = {
    "--policy.n_obs_steps": (["1"], "policy.n_obs_steps", 1),
    "--policy.normalization_mapping": (['{"STATE": "MIN_MAX", "ACTION": "MIN_MAX"}'],
                                       "policy.normalization_mapping.STATE", "MIN_MAX"),
    "--policy.n_action_repeats": (["1"], "policy.n_action_repeats", 1),
    "--policy.horizon": (["4"], "policy.horizon", 4),
    "--policy.n_action_steps": (["2"], "policy.n_action_steps", 2),
    "--policy.image_encoder_hidden_dim": (["16"], "policy.image_encoder_hidden_dim", 16),
    "--policy.state_encoder_hidden_dim": (["128"], "policy.state_encoder_hidden_dim", 128),
    "--policy.latent_dim": (["32"], "policy.latent_dim", 32),
    "--policy.q_ensemble_size": (["3"], "policy.q_ensemble_size", 3),
    "--policy.mlp_dim": (["256"], "policy.mlp_dim", 256),
    "--policy.discount": (["0.95"], "policy.discount", 0.95),
    "--policy.use_mpc": (["true"], "policy.use_mpc", True),
    "--policy.cem_iterations": (["4"], "policy.cem_iterations", 4),
    "--policy.max_std": (["1.5"], "policy.max_std", 1.5),
    "--policy.min_std": (["0.1"], "policy.min_std", 0.1),
    "--policy.n_gaussian_samples": (["256"], "policy.n_gaussian_samples", 256),
    "--policy.n_pi_samples": (["24"], "policy.n_pi_samples", 24),
    "--policy.uncertainty_regularizer_coeff": (["0.5"], "policy.uncertainty_regularizer_coeff", 0.5),
    "--policy.n_elites": (["32"], "policy.n_elites", 32),
    "--policy.elite_weighting_temperature": (["0.25"], "policy.elite_weighting_temperature", 0.25),
    "--policy.gaussian_mean_momentum": (["0.2"], "policy.gaussian_mean_momentum", 0.2),
    "--policy.max_random_shift_ratio": (["0.1"], "policy.max_random_shift_ratio", 0.1),
    "--policy.reward_coeff": (["1.0"], "policy.reward_coeff", 1.0),
    "--policy.expectile_weight": (["0.7"], "policy.expectile_weight", 0.7),
    "--policy.value_coeff": (["0.2"], "policy.value_coeff", 0.2),
    "--policy.consistency_coeff": (["10"], "policy.consistency_coeff", 10.0),
    "--policy.advantage_scaling": (["2.0"], "policy.advantage_scaling", 2.0),
    "--policy.pi_coeff": (["0.25"], "policy.pi_coeff", 0.25),
    "--policy.temporal_decay_coeff": (["0.6"], "policy.temporal_decay_coeff", 0.6),
    "--policy.target_model_momentum": (["0.99"], "policy.target_model_momentum", 0.99),
    "--policy.optimizer_lr": (["1e-3"], "optimizer.lr", 1e-3),
}
FROM_DATASET = {"--policy.input_features", "--policy.output_features"}


def test_every_tdmpc_flag_of_the_seed_is_covered():
    assert {f for f, seed in LEROBOT.items() if "tdmpc" in seed.owners} == set(TDMPC_FLAGS) | FROM_DATASET


def test_tdmpc_flags_compose_to_their_values(compose):
    args = ["--policy.type=tdmpc", "--env.type=xarm"]
    for flag, (words, _, _) in TDMPC_FLAGS.items():
        args += [flag, *words]
    overrides, _ = translate_argv(args)
    cfg = compose(env_dataset(overrides, CONF_DIR))
    assert cfg.dataset.repo_id == "local/xarm_lift_scripted" and cfg.env.type == "xarm"
    for flag, (_, key, value) in TDMPC_FLAGS.items():
        assert OmegaConf.select(cfg, key) == value, flag
    assert cfg.optimizer._target_ == "torch.optim.Adam"  # the preset, with the flag's lr
    OmegaConf.to_object(cfg.policy)  # and the policy's own checks pass


def test_recipe_is_lerobots_xarm_setup(compose):
    cfg = compose(["experiment=tdmpc_xarm"])
    assert (cfg.seed, cfg.steps, cfg.batch_size, cfg.eval_freq, cfg.save_freq, cfg.log_freq) == (
        1, 50000, 256, 5000, 10000, 100)
    assert cfg.policy._target_ == "models.tdmpc.modeling.TDMPCPolicy" and cfg.env.type == "xarm"
    assert cfg.dataset.repo_id == "local/xarm_lift_scripted"
    assert cfg.optimizer.lr == 3e-4 and cfg.optimizer.grad_clip_norm == 10.0 and cfg.scheduler.name == "constant"
    online = cfg.online
    assert (online.steps, online.rollout_n_episodes, online.rollout_batch_size, online.steps_between_rollouts,
            online.sampling_ratio, online.env_seed, online.buffer_capacity) == (50000, 1, 1, 50, 0.5, 10000, 80000)


@pytest.mark.parametrize("override, expected", [
    ("policy.n_elites=600", "policy.n_elites=600 exceeds the 563 trajectories sampled per CEM iteration"),
    ("policy.normalization_mapping.ACTION=MEAN_STD", "set policy.normalization_mapping.ACTION=MIN_MAX"),
    ("policy.horizon=0", "policy.horizon=0 is out of range: must be >= 1"),
    ("policy.expectile_weight=2.0", "policy.expectile_weight=2.0 is out of range: must be in [0, 1]"),
])
def test_bad_tdmpc_options_are_one_line_and_create_nothing(override, expected, tmp_path, monkeypatch, capsys):
    from cli.entry import prepare_argv
    from config.store import register_schemas

    register_schemas()
    monkeypatch.setenv("HYDRABOT_HOME", str(tmp_path / "home"))
    args = ["train.py", "policy=tdmpc", "env=xarm", override, f"hydra.run.dir={tmp_path / 'run'}"]
    with pytest.raises(SystemExit) as exit_info:
        prepare_argv(args, CONF_DIR, "train")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "run").exists() and not (tmp_path / "home").exists()
