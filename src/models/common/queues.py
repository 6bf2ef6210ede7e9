"""The observation window of a rollout, shared by policies that plan from the last few frames."""

from collections import deque
from typing import Mapping

import torch
from torch import Tensor


def push_observations(queues: Mapping[str, deque], obs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Appends this step's observations (B, ...) to their windows and returns the windows stacked
    (B, n, ...). An episode's first step fills its window with copies, so planning can start at once."""
    for key, queue in queues.items():
        if not queue:
            queue.extend([obs[key]] * queue.maxlen)
        else:
            queue.append(obs[key])
    return {key: torch.stack(list(queue), dim=1) for key, queue in queues.items()}


def check_observations(keys: list[str], obs: Mapping[str, Tensor]) -> None:
    missing = [k for k in keys if k not in obs]
    if missing:
        raise KeyError(f"select_action needs observations {missing}; got {sorted(obs)}")
