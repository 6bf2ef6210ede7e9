"""Schema of the ``env`` config group: which gym environment to build and what it emits.

One dataclass serves every simulator (pusht, aloha, xarm): a new environment is a new YAML file
whose ``type`` names the ``gym_<type>`` package and whose ``features``/``features_map`` describe
its observations, not a new class.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import Any, Optional

from config.ranges import ranged

FEATURE_TYPES = ("VISUAL", "STATE", "ENV", "ACTION")


@dataclass
class EnvFeature:
    """One array the environment emits or takes; images are ``[H, W, C]`` as the env returns them."""

    type: str
    shape: list[int] = ranged(ge=1)


@dataclass
class EnvConfig:
    """Builds ``gym.make(f"gym_{type}/{task}", ...)``; keys are the env's own observation keys.

    ``features`` is keyed by the env's observation keys (nested dicts flattened with ``/``, e.g.
    ``pixels/top``) plus ``action``; ``features_map`` renames them to the dataset's keys
    (``agent_pos`` -> ``observation.state``) so a policy trained on the dataset reads env
    observations unchanged. The ``*_width``/``*_height`` fields left ``None`` keep the env's own
    default; ``gym_kwargs`` are passed to ``gym.make`` verbatim for env-specific arguments.
    """

    type: str
    task: str
    fps: int = ranged(ge=1)
    episode_length: int = ranged(ge=1, why="steps before an episode is cut off")
    obs_type: str
    features: dict[str, EnvFeature]
    features_map: dict[str, str]
    render_mode: str = "rgb_array"
    observation_width: Optional[int] = ranged(None, ge=1)
    observation_height: Optional[int] = ranged(None, ge=1)
    visualization_width: Optional[int] = ranged(None, ge=1)
    visualization_height: Optional[int] = ranged(None, ge=1)
    gym_kwargs: dict[str, Any] = field(default_factory=dict)
    # The instruction a language-conditioned policy (pi0) is given at every step (observation "task");
    # null: the one the project's scripted demonstrations of this task were recorded with, else "".
    task_description: Optional[str] = None

    def __post_init__(self) -> None:
        self.features = {
            key: feature if isinstance(feature, EnvFeature) else EnvFeature(**feature)
            for key, feature in self.features.items()
        }
        for key, feature in self.features.items():
            if feature.type not in FEATURE_TYPES:
                raise ValueError(
                    f"env feature {key!r} has type {feature.type!r}; expected one of {FEATURE_TYPES}"
                )
            feature.shape = [int(dim) for dim in feature.shape]
        actions = [key for key, feature in self.features.items() if feature.type == "ACTION"]
        if len(actions) != 1:
            raise ValueError(f"env features need exactly one ACTION feature, got {actions}")
        observed = [key for key, feature in self.features.items() if feature.type != "ACTION"]
        unmapped = [key for key in observed if key not in self.features_map]
        if unmapped:
            raise ValueError(f"env features {unmapped} have no entry in features_map (env -> dataset key)")

    @property
    def gym_id(self) -> str:
        return f"gym_{self.type}/{self.task}"

    @property
    def make_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``gym.make`` besides the id."""
        kwargs: dict[str, Any] = {
            "max_episode_steps": self.episode_length,
            "obs_type": self.obs_type,
            "render_mode": self.render_mode,
        }
        for kind in ("observation", "visualization"):
            for side in ("width", "height"):
                if getattr(self, f"{kind}_{side}") is not None:
                    kwargs[f"{kind}_{side}"] = getattr(self, f"{kind}_{side}")
        kwargs.update(self.gym_kwargs)
        return kwargs


@dataclass
class PushtEnvConfig(EnvConfig):
    """LeRobot's PushT evaluation setup: 96x96 observations (the training images), 384x384 video.

    ``environment_state`` is mapped too so that ``obs_type: environment_state_agent_pos`` only
    needs its feature added.
    """

    type: str = "pusht"
    task: str = "PushT-v0"
    fps: int = 10
    episode_length: int = 300
    obs_type: str = "pixels_agent_pos"
    features: dict[str, EnvFeature] = field(
        default_factory=lambda: {
            "action": EnvFeature(type="ACTION", shape=[2]),
            "agent_pos": EnvFeature(type="STATE", shape=[2]),
            "pixels": EnvFeature(type="VISUAL", shape=[96, 96, 3]),
        }
    )
    features_map: dict[str, str] = field(
        default_factory=lambda: {
            "action": "action",
            "agent_pos": "observation.state",
            "environment_state": "observation.environment_state",
            "pixels": "observation.image",
        }
    )
    observation_width: Optional[int] = 96
    observation_height: Optional[int] = 96
    visualization_width: Optional[int] = 384
    visualization_height: Optional[int] = 384


def as_env_config(cfg: Any) -> EnvConfig:
    """Accepts an ``EnvConfig``, a Hydra ``DictConfig`` of the ``env`` group, or a plain mapping.

    Unknown keys fail here (``EnvConfig(**...)``) rather than being silently ignored.
    """
    if isinstance(cfg, EnvConfig):
        return cfg
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        obj = OmegaConf.to_object(cfg)
        if isinstance(obj, EnvConfig):
            return obj
        cfg = obj
    if not isinstance(cfg, Mapping):
        raise TypeError(f"expected an EnvConfig, a DictConfig or a mapping, got {type(cfg).__name__}")
    names = {f.name for f in fields(EnvConfig)}
    unknown = sorted(set(cfg) - names)
    if unknown:
        raise ValueError(f"unknown env config keys {unknown}; known: {sorted(names)}")
    return EnvConfig(**cfg)
