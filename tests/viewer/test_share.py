"""viewer.share.DeviceShare: renders use the model only in the loop's turns, within their share of the time.

The clock is a counter the two threads advance (a step or a render chunk "takes" so many seconds), so the
shares are exact and nothing depends on how fast this machine is. Waits are bounded, so a deadlock fails
the test instead of hanging it.
"""

from __future__ import annotations

import threading
import time

import pytest

from viewer.share import DeviceShare, Stopped

WAIT_S = 20.0  # bound on any wait: a deadlock fails instead of hanging


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def renderer(share: DeviceShare, clock: Clock, chunk_s: float, chunks: int | None, log: list, stop: threading.Event):
    """A render thread that wants the model all the time: `chunks` chunks (None: until `stop`)."""

    def run():
        n = 0
        while (chunks is None or n < chunks) and not stop.is_set():
            try:
                with share.turn():
                    log.append(("render", share.step, clock.now))
                    clock.now += chunk_s
            except Stopped:
                return
            n += 1

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def train(share: DeviceShare, clock: Clock, steps: int, step_s: float, log: list, first: int = 0) -> None:
    for step in range(first + 1, first + steps + 1):
        log.append(("step", step, clock.now))
        clock.now += step_s
        share.between_steps(step)


def test_renders_take_at_most_their_share_and_never_overlap_a_step():
    clock, log, stop = Clock(), [], threading.Event()
    share = DeviceShare(train_util=0.8, training=True, burst_s=0.05, clock=clock)
    share.claim(0)
    thread = renderer(share, clock, chunk_s=0.03, chunks=None, log=log, stop=stop)
    train(share, clock, steps=2000, step_s=0.01, log=log)
    share.release()
    stop.set()
    thread.join(WAIT_S)
    assert not thread.is_alive()
    renders = [e for e in log if e[0] == "render"]
    assert renders, "the renderer never got a turn"
    # during training (up to the last step), renders had at most 1 - train_util of the time, give or take the
    # burst allowance and one chunk (charged after it ran)
    end = next(t for kind, step, t in log if kind == "step" and step == 2000) + 0.01
    busy = sum(0.03 for _, _, t in renders if t < end)
    assert busy / end <= 0.2 + (0.05 + 0.03) / end, (busy, end)
    assert busy / end >= 0.15  # and a renderer that always waits does get its share
    # each render ran between two steps: the clock shows no step starting inside a chunk
    starts = sorted(t for kind, _, t in log if kind == "step")
    for _, _, t in renders:
        assert not any(t < s < t + 0.03 for s in starts)


def test_train_util_one_renders_nothing_during_training_and_freely_after():
    clock, log, stop = Clock(), [], threading.Event()
    share = DeviceShare(train_util=1.0, training=True, clock=clock)
    share.claim(0)
    thread = renderer(share, clock, chunk_s=0.05, chunks=3, log=log, stop=stop)
    train(share, clock, steps=200, step_s=0.01, log=log)
    assert not [e for e in log if e[0] == "render"]
    share.release()  # the end of fit(): renders no longer wait for credit
    thread.join(WAIT_S)
    assert [e[0] for e in log].count("render") == 3


def test_pause_holds_the_loop_and_frees_the_renderer():
    clock, log, stop = Clock(), [], threading.Event()
    share = DeviceShare(train_util=1.0, training=True, clock=clock)  # no credit ever: only a pause lets it render
    share.claim(0)
    share.pause(True)
    loop = threading.Thread(target=train, args=(share, clock, 5, 0.01, log), daemon=True)
    loop.start()
    thread = renderer(share, clock, chunk_s=0.05, chunks=4, log=log, stop=stop)
    thread.join(WAIT_S)
    assert [e[0] for e in log] == ["step", "render", "render", "render", "render"]  # the loop waits after step 1
    assert loop.is_alive() and share.step == 1 and share.held
    share.pause(False)
    loop.join(WAIT_S)
    assert not loop.is_alive() and share.step == 5 and not share.held


def test_nothing_renders_before_the_loop_lends_the_model_and_close_unblocks():
    share = DeviceShare(train_util=0.5, training=True)  # a run's viewer: the loop owns the model from the start
    entered, failed = threading.Event(), []

    def render():
        try:
            with share.turn():
                entered.set()
        except Stopped:
            failed.append("stopped")

    thread = threading.Thread(target=render, daemon=True)
    thread.start()
    thread.join(0.5)
    assert not entered.is_set()  # weights are still loading (resume, warm start): no render may touch them
    share.close()
    thread.join(WAIT_S)
    assert failed == ["stopped"]


def test_a_checkpoint_viewer_renders_at_once():
    share = DeviceShare(train_util=0.95, training=False)  # view.py: nobody trains
    with share.turn():
        pass
    assert share.credit == 0.0


@pytest.mark.parametrize("util", [0.5, 0.9])
def test_credit_is_capped_by_the_burst(util):
    clock = Clock()
    share = DeviceShare(train_util=util, training=True, burst_s=0.1, clock=clock)
    share.claim(0)
    clock.now += 100.0  # a long evaluation between two turns
    share.between_steps(1)
    assert share.credit == pytest.approx(0.1)


class DeviceSpan:
    """A turn's work on an asynchronous device: done when `done` is set, having taken `device_s` seconds."""

    def __init__(self, device_s: float):
        self.device_s, self.closed, self.done = device_s, False, threading.Event()

    def close(self) -> None:
        self.closed = True

    def seconds(self) -> float:
        assert self.done.wait(WAIT_S), "the device work never finished"
        return self.device_s


def render_in_turn(share: DeviceShare, clock: Clock, turn_s: float, step: int):
    """A renderer thread waits for a turn; the loop's `between_steps(step)` lends it one chunk of `turn_s`
    seconds. Returns the chunk's Turn once the loop has the model back."""
    turns = []

    def render():
        with share.turn() as turn:
            clock.now += turn_s  # the chunk's kernels are launched; the device has not run them yet
        turns.append(turn)

    thread = threading.Thread(target=render, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not share._render_waiting:  # noqa: SLF001 - the renderer asks for its turn
        assert time.monotonic() < deadline
        time.sleep(0.001)
    share.between_steps(step)
    thread.join(WAIT_S)
    assert turns, "the loop did not lend the model"
    return turns[0]


def test_a_turn_ends_without_waiting_for_the_device_and_is_charged_its_device_time_when_settled():
    clock, spans = Clock(), []

    def span():
        spans.append(DeviceSpan(device_s=0.04))
        return spans[-1]

    share = DeviceShare(train_util=0.5, training=True, burst_s=1.0, clock=clock, span=span)
    share.claim(0)
    clock.now += 0.2  # 0.2 s of training earns 0.2 s of renders at train_util 0.5
    turn = render_in_turn(share, clock, 0.01, step=1)
    assert spans[0].closed and turn.seconds == pytest.approx(0.01)
    assert share.credit == pytest.approx(0.19)
    # the loop has the model back although the chunk's device work is not done: it goes on training
    clock.now += 0.1
    share.between_steps(2)
    assert share.step == 2
    settled = threading.Thread(target=share.settle, daemon=True)
    settled.start()
    settled.join(0.2)
    assert settled.is_alive()  # the renderer waits for the device, outside any turn
    spans[0].done.set()
    settled.join(WAIT_S)
    assert not settled.is_alive()
    # the turn cost training the larger of its own 0.01 s and the device's 0.04 s
    assert turn.seconds == pytest.approx(0.04)
    assert share.render_seconds == pytest.approx(0.04)
    assert share.credit == pytest.approx(0.19 + 0.1 - 0.03)


def test_the_next_turn_settles_the_last_one_first():
    clock = Clock()

    def span():
        done = DeviceSpan(device_s=0.5)
        done.done.set()
        return done

    share = DeviceShare(train_util=0.5, training=True, burst_s=1.0, clock=clock, span=span)
    share.claim(0)
    clock.now += 0.3
    render_in_turn(share, clock, 0.01, step=1)
    assert share.credit == pytest.approx(0.29)
    # the device took 0.5 s, more than the credit left: asking for the next turn charges it, and the
    # renderer then waits until training has earned the overdraft back
    clock.now += 0.1
    share.between_steps(2)
    assert share.credit == pytest.approx(0.39)  # not settled yet: no turn was asked for
    entered = threading.Event()

    def render():
        with share.turn():
            entered.set()

    thread = threading.Thread(target=render, daemon=True)
    thread.start()
    deadline = time.monotonic() + WAIT_S
    while not share._render_waiting:  # noqa: SLF001
        assert time.monotonic() < deadline
        time.sleep(0.001)
    assert share.credit == pytest.approx(0.39 - 0.49)
    share.between_steps(3)  # no time has passed: still overdrawn, the loop does not lend
    assert not entered.is_set()
    clock.now += 0.2
    share.between_steps(4)  # +0.2 s: credit 0.1 > 0, and the waiting renderer takes its turn
    thread.join(WAIT_S)
    assert entered.is_set()
