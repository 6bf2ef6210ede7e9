"""LeRobot's ACT flags (`--policy.type=act` and every `--policy.*` of its ACTConfig section) translate
into overrides that compose to the values given, and `--env.type=aloha` trains on ALOHA demos."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf

from cli.entry import env_dataset
from cli.seed_flags import LEROBOT, translate_argv
from helpers import CONF_DIR

# flag -> (words after it, the key it must set, the value it must have there)
ACT_FLAGS = {
    "--policy.n_obs_steps": (["1"], "policy.n_obs_steps", 1),
    "--policy.normalization_mapping": (['{"STATE": "MIN_MAX"}'], "policy.normalization_mapping.STATE", "MIN_MAX"),
    "--policy.chunk_size": (["50"], "policy.chunk_size", 50),
    "--policy.n_action_steps": (["1"], "policy.n_action_steps", 1),
    "--policy.vision_backbone": (["resnet50"], "policy.vision_backbone", "resnet50"),
    "--policy.pretrained_backbone_weights": (["None"], "policy.pretrained_backbone_weights", None),
    "--policy.replace_final_stride_with_dilation": (["1"], "policy.replace_final_stride_with_dilation", True),
    "--policy.pre_norm": (["true"], "policy.pre_norm", True),
    "--policy.dim_model": (["64"], "policy.dim_model", 64),
    "--policy.n_heads": (["4"], "policy.n_heads", 4),
    "--policy.dim_feedforward": (["128"], "policy.dim_feedforward", 128),
    "--policy.feedforward_activation": (["gelu"], "policy.feedforward_activation", "gelu"),
    "--policy.n_encoder_layers": (["2"], "policy.n_encoder_layers", 2),
    "--policy.n_decoder_layers": (["2"], "policy.n_decoder_layers", 2),
    "--policy.use_vae": (["false"], "policy.use_vae", False),
    "--policy.latent_dim": (["16"], "policy.latent_dim", 16),
    "--policy.n_vae_encoder_layers": (["2"], "policy.n_vae_encoder_layers", 2),
    "--policy.temporal_ensemble_coeff": (["0.01"], "policy.temporal_ensemble_coeff", 0.01),
    "--policy.dropout": (["0.2"], "policy.dropout", 0.2),
    "--policy.kl_weight": (["5.0"], "policy.kl_weight", 5.0),
    "--policy.optimizer_lr": (["2e-5"], "optimizer.lr", 2e-5),
    "--policy.optimizer_weight_decay": (["1e-3"], "optimizer.weight_decay", 1e-3),
    "--policy.optimizer_lr_backbone": (["3e-6"], "policy.optimizer_lr_backbone", 3e-6),
}
FROM_DATASET = {"--policy.input_features", "--policy.output_features"}


def test_every_act_flag_of_the_seed_is_covered():
    act_flags = {f for f, seed in LEROBOT.items() if "act" in seed.owners}
    shared = {"--policy.n_obs_steps", "--policy.normalization_mapping", "--policy.vision_backbone",
              "--policy.pretrained_backbone_weights", "--policy.dropout", "--policy.optimizer_lr",
              "--policy.optimizer_weight_decay"}  # listed by several policies, so not owned by act alone
    assert act_flags | shared == set(ACT_FLAGS) | (FROM_DATASET & act_flags)


def test_act_flags_compose_to_their_values(compose):
    args = ["--policy.type=act", "--env.type=aloha"]
    for flag, (words, _, _) in ACT_FLAGS.items():
        args += [flag, *words]
    overrides, _ = translate_argv(args)
    overrides = env_dataset(overrides, CONF_DIR)
    cfg = compose(overrides)
    assert cfg.dataset.repo_id == "local/aloha_insertion_scripted" and cfg.env.type == "aloha"
    for flag, (_, key, value) in ACT_FLAGS.items():
        assert OmegaConf.select(cfg, key) == value, flag
    OmegaConf.to_object(cfg.policy)  # and the policy's own checks pass


@pytest.mark.parametrize("task, dataset", [("AlohaTransferCube-v0", "aloha_transfer_cube_scripted"),
                                           (None, "aloha_insertion_scripted")])
def test_env_alone_picks_its_tasks_dataset(compose, task, dataset):
    args = ["policy=act", "env=aloha", "policy.pretrained_backbone_weights=null"]
    args += [f"env.task={task}"] if task else []
    assert compose(env_dataset(args, CONF_DIR)).dataset.repo_id == f"local/{dataset}"
    explicit = ["env=aloha", "dataset=pusht"]
    assert env_dataset(explicit, CONF_DIR) == explicit  # a dataset given is kept


@pytest.mark.parametrize("override, expected", [
    ("policy.temporal_ensemble_coeff=0.01", "policy.temporal_ensemble_coeff=0.01 needs a prediction at every step;"
                                            " set policy.n_action_steps=1"),
    ("policy.pretrained_backbone_weights=/nowhere/r18.pth", "policy.pretrained_backbone_weights=/nowhere/r18.pth is"
                                                            " neither a file nor a torchvision weights name"),
    ("policy.chunk_size=0", "policy.chunk_size=0 is out of range: must be >= 1"),
])
def test_bad_act_options_are_one_line_and_create_nothing(override, expected, tmp_path, capsys):
    from cli.entry import prepare_argv
    from config.store import register_schemas

    register_schemas()
    args = ["train.py", "policy=act", "env=aloha", "policy.pretrained_backbone_weights=null", override,
            f"hydra.run.dir={tmp_path / 'run'}"]
    with pytest.raises(SystemExit) as exit_info:
        prepare_argv(args, CONF_DIR, "train")
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert exit_info.value.code == 2 and len(lines) == 1 and expected in lines[0], lines
    assert not (tmp_path / "run").exists()
