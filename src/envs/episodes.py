"""The frames of rolled-out episodes, kept in the dataset's keys and dtypes (what the online buffer stores).

A vector env's envs end their episodes at different steps; the recorder keeps each env's frames up to
and including the step that ended its episode, then the final observation that step returned (under
the NEXT_STEP autoreset the ending step returns its own episode's last observation).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from envs.observation import flatten_observation


class EpisodeRecorder:
    """`keys` maps each dataset key to keep to its numpy dtype: observations (found through
    `features_map`, env key -> dataset key), `action`, `next.reward`, `next.done`, `next.success`.
    An episode of n steps comes out as n + 1 frames; the last one's action and next.* repeat step n's."""

    STEP_KEYS = ("action", "next.reward", "next.done", "next.success")

    def __init__(self, n_envs: int, features_map: Mapping[str, str], keys: Mapping[str, str]):
        self.keys = dict(keys)
        self.env_key = {dataset_key: env_key for env_key, dataset_key in features_map.items() if dataset_key in keys}
        self.frames: list[dict[str, list[np.ndarray]]] = [{key: [] for key in keys} for _ in range(n_envs)]

    def observe(self, obs: Mapping, envs: np.ndarray) -> None:
        """The observations of the envs in mask `envs` (at reset, or after a step)."""
        flat = flatten_observation(obs)
        for key, env_key in self.env_key.items():
            if key in self.STEP_KEYS:
                continue
            values = np.asarray(flat[env_key])
            for i in np.flatnonzero(envs):
                self.frames[i][key].append(values[i].astype(self.keys[key], copy=True))

    def step(self, action: np.ndarray, reward: np.ndarray, done: np.ndarray, success: np.ndarray,
             envs: np.ndarray) -> None:
        """What the envs in mask `envs` did and got at this step."""
        values = {"action": action, "next.reward": reward, "next.done": done, "next.success": success}
        for key, value in values.items():
            if key in self.keys:
                for i in np.flatnonzero(envs):
                    self.frames[i][key].append(np.asarray(value[i]).astype(self.keys[key], copy=True))

    def episodes(self) -> list[dict[str, np.ndarray]]:
        """One dict of stacked arrays per env, in env order."""
        out = []
        for frames in self.frames:
            n = len(frames["action"]) if "action" in frames else None
            episode = {}
            for key, values in frames.items():
                if key in self.STEP_KEYS and values:
                    values = [*values, values[-1]]  # the final observation's frame repeats the last step
                episode[key] = np.stack(values)
            if n is not None and any(len(v) != n + 1 for v in episode.values()):
                raise RuntimeError(f"recorded episode frames disagree: { {k: len(v) for k, v in episode.items()} }")
            out.append(episode)
        return out
