"""What a policy keeps between rollout steps: its observation windows and the action chunk it is executing."""

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


class ActionQueue(deque):
    """The actions a policy has planned and not yet taken, one (B, action_dim) tensor each, with the chunk they
    were planned in: what `PlansActionChunks.action_plan()` reports (view.py draws it over a replayed rollout)."""

    def __init__(self, maxlen: int):
        super().__init__(maxlen=maxlen)
        self.chunk: Tensor | None = None

    def __reduce__(self):  # deque's own passes (iterable, maxlen) to the constructor (copy.deepcopy, pickle)
        return type(self), (self.maxlen,), self.__dict__, iter(self)

    def plan(self, chunk: Tensor) -> None:
        """Queues a planned chunk (B, n, action_dim), n <= maxlen, its first action first."""
        self.chunk = chunk
        self.extend(chunk.unbind(1))

    def action_plan(self) -> tuple[Tensor, int] | None:
        """`(chunk (B, n, action_dim), how many of its actions were taken)`; None before the first plan."""
        if self.chunk is None:
            return None
        return self.chunk, self.chunk.shape[1] - len(self)


class PlansActionChunks:
    """A policy that acts from an `ActionQueue` in `self._action_queue` declares the chunk it is executing, so a
    viewer can draw where the policy means to go without knowing which policy it is."""

    def action_plan(self) -> tuple[Tensor, int] | None:
        return self._action_queue.action_plan()
