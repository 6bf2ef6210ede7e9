"""Every config group option composes and instantiates; presets and schemas behave as documented."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from hydra.errors import ConfigCompositionException
from hydra.utils import instantiate
from omegaconf import OmegaConf

from helpers import CONF_DIR, TINY_POLICY

GROUPS = ["policy", "env", "dataset", "optimizer", "scheduler", "machine", "logger", "eval", "experiment"]


def options(group: str) -> list[str]:
    folder = Path(CONF_DIR) / group
    return sorted(str(p.relative_to(folder).with_suffix("")) for p in folder.rglob("*.yaml"))


def test_every_group_exists_with_options():
    for group in GROUPS:
        assert options(group), f"conf/{group} has no options"
    assert {"adam", "adamw", "sgd"} <= set(options("optimizer"))
    assert {"diffuser", "cosine_decay_with_warmup"} <= set(options("scheduler"))


@pytest.mark.parametrize("experiment", options("experiment"))
def test_experiments_compose(compose, experiment):
    cfg = compose([f"experiment={experiment}"])
    OmegaConf.resolve(cfg)
    assert cfg.steps > 0


def test_policy_preset_applies_unless_an_optimizer_is_picked(compose):
    cfg = compose([])
    assert cfg.optimizer._target_ == "torch.optim.Adam"
    assert (cfg.optimizer.lr, list(cfg.optimizer.betas), cfg.optimizer.weight_decay) == (1e-4, [0.95, 0.999], 1e-6)
    assert (cfg.scheduler.name, cfg.scheduler.num_warmup_steps) == ("cosine", 500)
    cfg = compose(["optimizer.lr=3e-4"])
    assert cfg.optimizer.lr == 3e-4 and cfg.optimizer._target_ == "torch.optim.Adam"
    cfg = compose(["optimizer=sgd", "scheduler=cosine_decay_with_warmup"])
    assert cfg.optimizer._target_ == "torch.optim.SGD" and "betas" not in cfg.optimizer
    assert cfg.scheduler._target_.endswith("cosine_decay_with_warmup")


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "preset/diffusion"])
@pytest.mark.parametrize("scheduler", ["diffuser", "cosine_decay_with_warmup", "preset/diffusion"])
def test_optimizers_and_schedulers_instantiate(compose, optimizer, scheduler):
    from training.optim import build_optimizer, build_scheduler

    cfg = compose([f"optimizer={optimizer}", f"scheduler={scheduler}"])
    params = [torch.nn.Parameter(torch.zeros(3))]
    opt, clip = build_optimizer(cfg.optimizer, params)
    sched = build_scheduler(cfg.scheduler, opt, num_training_steps=100)
    for _ in range(3):  # past step 0, where a warmup starts at lr 0
        sched.step()
    assert opt.param_groups[0]["lr"] > 0
    params[0].grad = torch.ones(3)
    opt.step()
    assert params[0].abs().sum() > 0
    assert clip == cfg.optimizer.grad_clip_norm


def test_policy_instantiates_from_dataset_features(compose, pusht_root):
    from data.features import policy_features
    from data.lerobot_dataset import LeRobotDatasetMetadata

    cfg = compose(TINY_POLICY)
    meta = LeRobotDatasetMetadata(pusht_root)
    policy = instantiate(cfg.policy, features=policy_features(meta.features), stats=meta.stats, _convert_="all")
    assert policy.config.input_features["observation.image"]["shape"] == [3, 96, 96]
    assert policy.config.output_features["action"]["shape"] == [2]


def test_env_instantiates(compose):
    from envs.factory import make_env

    cfg = compose(["env.episode_length=5"])
    env = make_env(cfg.env, n_envs=1)
    obs, _ = env.reset(seed=0)
    assert obs["pixels"].shape == (1, 96, 96, 3)
    env.close()


@pytest.mark.parametrize("logger", options("logger"))
def test_loggers_instantiate_without_contacting_a_server(compose, logger):
    cfg = compose([f"logger={logger}", "logger.tracking_uri=http://127.0.0.1:9" if logger == "mlflow" else "seed=1"])
    tracker = instantiate(cfg.logger)
    assert tracker.run_id is None


def test_machine_seed_follows_root_seed(compose):
    assert compose(["seed=7"]).machine.seed == 7
    assert compose(["machine.seed=3"]).machine.seed == 3


@pytest.mark.parametrize("override, needle", [
    ("policy.horizn=3", "horizn"),
    ("batch_size=abc", "batch_size"),
    ("optimizer.momentum=0.9", "momentum"),  # Adam has no momentum
    ("env.features.pixels.type=COLOR", "COLOR"),
])
def test_schema_rejects_wrong_keys_and_types_at_compose_time(compose, override, needle):
    with pytest.raises((ConfigCompositionException, ValueError)) as exc:
        cfg = compose([override])
        OmegaConf.to_object(cfg.env)
    assert needle in str(exc.value) + str(exc.value.__cause__)


NERF = ["model=nerfacto", "~policy", "optimizer=preset/nerfacto", "scheduler=preset/nerfacto"]


def _with_base(group: str, option: str) -> list[str]:
    """The overrides a user would type to pick `option` of `group` (the family switch included)."""
    if group == "model":
        return [f"model={option}", "~policy", f"optimizer=preset/{option}", f"scheduler=preset/{option}",
                "data=synthetic"]
    if group == "data":
        return [*NERF, f"data={option}", "data.data=/scenes/x"]
    if group == "eval" and option == "views":
        return [*NERF, "data=synthetic", "eval=views"]
    if group == "env":  # an env with the dataset recorded in it
        return [f"env={option}", f"dataset={ {'aloha': 'aloha_transfer_cube', 'xarm': 'xarm_lift'}.get(option, 'pusht')}"]
    return [f"{group}={option}"]


@pytest.mark.parametrize("group, option", [(g, o) for g in ("env", "dataset", "eval", "model", "data", "machine")
                                           for o in options(g)])
def test_every_option_of_every_group_composes_and_validates(compose, group, option):
    """Each YAML option composes on the schema it names, resolves, and its dataclass checks pass."""
    cfg = compose(_with_base(group, option))
    OmegaConf.resolve(cfg)
    assert cfg[group] is not None
    if group == "env":
        env_cfg = OmegaConf.to_object(cfg.env)  # the env's own dataclass
        assert env_cfg.fps > 0 and env_cfg.episode_length > 0
        assert cfg.dataset.demos.expert.split("_")[0] == option
    if group == "dataset":
        assert cfg.dataset.demos.expert in option and cfg.dataset.demos.n_episodes > 0
    if group in ("model", "data") or option == "views":
        assert cfg.policy is None and cfg.env is None and cfg.dataset is None
        assert set(cfg.optimizer) >= {"fields", "proposal_networks"}


def test_an_experiment_that_picks_a_model_switches_the_family(compose):
    """`experiment=nerfacto_blender` alone is a nerfacto run: the command line gets the family switch
    that `model=nerfacto` would get (the optimizer preset can only be overridden there)."""
    from cli.entry import family_switch

    args = family_switch(["experiment=nerfacto_blender", "steps=5"], CONF_DIR)
    assert args == ["experiment=nerfacto_blender", "~policy", "data=synthetic", "optimizer=preset/nerfacto",
                    "scheduler=preset/nerfacto", "steps=5"]
    cfg = compose(args)
    assert cfg.policy is None and cfg.env is None and set(cfg.optimizer) == {"proposal_networks", "fields",
                                                                            "camera_opt"}
    assert (cfg.model.near_plane, cfg.model.far_plane, cfg.data.scene.format) == (2.0, 6.0, "blender")
    assert family_switch(["experiment=quickstart"], CONF_DIR) == ["experiment=quickstart"]
