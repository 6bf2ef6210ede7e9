"""viewer.share.DeviceShare: renders use the model only in the loop's turns, within their share of the time.

The clock is a counter the two threads advance (a step or a render chunk "takes" so many seconds), so the
shares are exact and nothing depends on how fast this machine is. Waits are bounded, so a deadlock fails
the test instead of hanging it.
"""

from __future__ import annotations

import threading

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
