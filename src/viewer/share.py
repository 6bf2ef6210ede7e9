"""Training and the viewer's renders take turns with the model, and renders get a bounded share of the time.

The training loop owns the model from the start of `fit()` to its end. The only moment the viewer's
render thread may use it is inside `between_steps()`, which the loop calls after each optimizer step
(its logging, checkpoint and evaluations done): there the training thread waits while the renderer
runs one chunk of rays. So a render never overlaps a step, an evaluation or a checkpoint, and the
model's train/eval mode and its step-counted state are never touched mid-step.

How much: each second the training thread works earns the renderer `(1 - train_util) / train_util`
seconds (nerfstudio's "Train Util" control, 0.85 there), capped at `burst_s` (0.1 s) so a burst after
a long quiet spell stays short; a chunk is charged what it took, so a long one is paid back by the steps
after it. With the credit at or below zero the renderer waits. Over a run, renders therefore take at
most `1 - train_util` of the wall time, and nothing at all while nobody looks at the viewer. While
training is paused or finished (or never started: `view.py`), renders run freely.

On a GPU a turn does not wait for the device: its kernels are queued behind the step's and the turn ends
as soon as they are launched, so training queues its next step while the GPU still renders and the
CPU/GPU overlap of the loop is never broken. A `span()` (CUDA events) times the turn's device work, and
`settle()`, called by the renderer outside any turn before it reads what the turn computed, waits for it
and charges the device time that exceeded the turn's own.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

TRAIN = "train"
RENDER = "render"


class Span(Protocol):
    """A turn's device work: opened as the turn starts (after the step's queued work), `close()`d as it ends
    (without waiting), and `seconds()` waits for it and says how long the device spent on it."""

    def close(self) -> None: ...

    def seconds(self) -> float: ...


@dataclass
class Turn:
    """What one turn cost: `seconds` is its own time, then, once settled, the larger of that and its device time."""

    seconds: float = 0.0
    span: Span | None = None


class Stopped(Exception):
    """The share was closed while the renderer waited for its turn."""


class DeviceShare:
    def __init__(self, train_util: float, training: bool, burst_s: float = 0.1,
                 clock: Callable[[], float] = time.perf_counter, span: Callable[[], Span] | None = None):
        self.train_util = float(train_util)
        self.burst_s = burst_s
        self.clock = clock
        self.span = span  # opens a Span on an asynchronous device (CUDA); None: a turn's work is done when it ends
        self._unsettled: Turn | None = None
        self._cond = threading.Condition()
        self._owner: str | None = TRAIN if training else None
        self._training = training  # the loop owns the model between its turns
        self._paused = False
        self._held = False  # the loop waits in between_steps because of a pause
        self._render_waiting = False
        self._closed = False
        self._since = clock()  # when the training thread last took the model back
        self.credit = 0.0  # seconds of render time earned and not yet spent
        self.step = 0  # the last optimizer step the loop reported
        self.train_seconds = 0.0  # the training thread's time between turns, for the viewer's steps/s
        self.render_seconds = 0.0

    # ------------------------------------------------------------------ state
    @property
    def training(self) -> bool:
        """True while the loop runs and is not paused (renders are then rationed)."""
        return self._training and not self._paused

    @property
    def paused(self) -> bool:
        return self._paused

    @property
    def held(self) -> bool:
        """True once a pause has taken hold: the loop waits after step `step`."""
        return self._held

    def set_train_util(self, value: float) -> None:
        with self._cond:
            self.train_util = float(value)

    def pause(self, paused: bool) -> None:
        with self._cond:
            self._paused = paused
            self._cond.notify_all()

    # ------------------------------------------------------------------ the training thread
    def claim(self, step: int) -> None:
        """The loop starts using the model (waits for a render chunk still running)."""
        with self._cond:
            self._cond.wait_for(lambda: self._owner in (None, TRAIN) or self._closed)
            self._owner, self._training, self.step = TRAIN, True, step
            self._since = self.clock()

    def between_steps(self, step: int) -> None:
        """After optimizer step `step`: earn render time, then wait while paused, or lend the model to the
        renderer when it waits for a turn, for as many chunks as its credit lasts."""
        with self._cond:
            if self._owner != TRAIN:  # not claimed (a loop without claim()): nothing to lend
                return
            now = self.clock()
            worked = now - self._since
            self.train_seconds += worked
            self.step = step
            self.credit = min(self.credit + worked * self._render_rate(), self.burst_s)
            self._since = now
            if not (self._paused or self._lend()):
                return
            self._owner = None
            self._cond.notify_all()

            def back() -> bool:  # when unpaused, the renderer's chunk is over and it has no credit or wants no more
                self._held = self._paused and not self._closed
                return self._closed or (not self._paused and self._owner is None and not self._lend())

            self._cond.wait_for(back)
            self._held = False
            self._owner = TRAIN
            self._since = self.clock()

    def _lend(self) -> bool:
        return self._render_waiting and self.credit > 0

    def release(self) -> None:
        """The loop is done with the model (the end of fit, or a failure): renders run freely."""
        with self._cond:
            if self._owner == TRAIN:
                self._owner = None
            self._training = False
            self._cond.notify_all()

    def _render_rate(self) -> float:
        u = self.train_util
        return (1.0 - u) / u if u < 1.0 else 0.0

    # ------------------------------------------------------------------ the render thread
    @contextlib.contextmanager
    def turn(self) -> Iterator[Turn]:
        """One render chunk with the model: waits for the loop's next turn (and for credit) while training
        runs, at once otherwise. Raises Stopped when the share is closed meanwhile. The previous turn is
        settled first, so its device time is charged before another is granted."""
        self.settle()
        with self._cond:
            self._render_waiting = True
            self._cond.notify_all()
            try:
                self._cond.wait_for(lambda: self._closed or (self._owner is None and (
                    not self.training or self.credit > 0)))
            finally:
                self._render_waiting = False
            if self._closed:
                raise Stopped
            self._owner = RENDER
        turn = Turn(span=self.span() if self.span is not None else None)
        start = self.clock()
        try:
            yield turn
        finally:
            if turn.span is not None:
                turn.span.close()
            turn.seconds = self.clock() - start
            with self._cond:
                self._owner = None
                self._charge(turn.seconds)
                self._unsettled = turn if turn.span is not None else None
                self._cond.notify_all()

    def settle(self) -> None:
        """Waits for the last turn's device work (the render thread, outside any turn, while training goes on)
        and charges the device time beyond the turn's own: a turn costs training the larger of the two."""
        turn, self._unsettled = self._unsettled, None
        if turn is None:
            return
        extra = max(0.0, turn.span.seconds() - turn.seconds)
        turn.seconds += extra
        with self._cond:
            self._charge(extra)

    def _charge(self, seconds: float) -> None:
        self.render_seconds += seconds
        if self.training:
            self.credit -= seconds

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
