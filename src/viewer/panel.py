"""The viewer's control panel: training status and pause, the render's output and resolution, the metrics.

Metrics come from `<run dir>/metrics.jsonl`, which every tracker appends each logged metric to
(tracking/local_log.py), read as it grows: training, evaluations and `view.py` on a finished run all
show the same records, and the loop needs no extra hook. The file is data (a downloaded run folder's
too): each line is parsed as JSON and only numbers are taken.
"""

from __future__ import annotations

import json
import math
import threading
import time
from pathlib import Path

import numpy as np
import viser
import viser.uplot

from viewer.render import Settings
from viewer.share import DeviceShare

MAX_POINTS = 2000  # per chart: older points are thinned beyond this
CHARTS = (("train/loss", "loss"), ("train/psnr", "PSNR (train rays)"))


class MetricsFeed:
    """The records of a metrics.jsonl as it grows: the latest value of each metric and a few series."""

    def __init__(self, path: Path):
        self.path = path
        self._offset = 0
        self.latest: dict[str, tuple[int, float]] = {}
        self.series: dict[str, tuple[list[int], list[float]]] = {key: ([], []) for key, _ in CHARTS}

    def poll(self) -> bool:
        """Reads the lines added since the last call; True when there were any."""
        try:
            size = self.path.stat().st_size
        except OSError:
            return False
        if size < self._offset:  # a resumed run cut the file back to its checkpoint: read it again
            self.__init__(self.path)
        if size == self._offset:
            return False
        with self.path.open("rb") as f:
            f.seek(self._offset)
            data = f.read(size - self._offset)
        end = data.rfind(b"\n") + 1  # a line still being written waits for the next call
        self._offset += end
        for line in data[:end].splitlines():
            self._take(line)
        return end > 0

    def _take(self, line: bytes) -> None:
        try:
            record = json.loads(line)
            step = int(record["step"])
        except (ValueError, KeyError, TypeError):
            return
        for key, value in record.items():
            if key in ("step", "time") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if not math.isfinite(value):
                continue
            self.latest[key] = (step, float(value))
            if key in self.series:
                steps, values = self.series[key]
                steps.append(step)
                values.append(float(value))
                if len(steps) > MAX_POINTS:
                    del steps[::2], values[::2]

    def table(self) -> str:
        """Markdown: the latest value of each metric (gradient norms left out), grouped by their prefix."""
        rows = [f"| {key} | {value:.5g} | {step} |" for key, (step, value) in sorted(self.latest.items())
                if "/gradients/" not in key]
        if not rows:
            return "No metrics yet."
        return "\n".join(["| metric | value | step |", "| --- | --- | --- |", *rows])


class Panel:
    """The GUI every browser shares. `update()` refreshes what changes (called about once a second)."""

    def __init__(self, server: viser.ViserServer, share: DeviceShare, settings: Settings, outputs: tuple[str, ...],
                 metrics_path: Path, total_steps: int | None, training: bool, on_cameras_shown, on_settings):
        self.server, self.share, self.settings = server, share, settings
        self.total_steps, self.training = total_steps, training
        self.feed = MetricsFeed(metrics_path)
        self._last = (time.monotonic(), share.step)
        self._rate = 0.0
        gui = server.gui
        with gui.add_folder("Training"):
            self.status = gui.add_markdown(self._status_text())
            self.pause = gui.add_button("Pause training", disabled=not training,
                                        hint="Stops after the current step; renders then use the whole device")
            self.train_util = gui.add_slider("Train util", min=0.1, max=1.0, step=0.01, initial_value=share.train_util,
                                             hint="Share of the time training keeps while the viewer renders")
        with gui.add_folder("Render"):
            self.output = gui.add_dropdown("Output", outputs, initial_value=settings.output)
            self.max_res = gui.add_slider("Max resolution", min=64, max=2048, step=64, initial_value=settings.max_res,
                                          hint="Long side of the finest render, in pixels")
            self.cameras = gui.add_checkbox("Training cameras", initial_value=True)
        with gui.add_folder("Metrics"):
            self.metrics = gui.add_markdown(self.feed.table())
            self.charts = {key: gui.add_uplot(data=(np.zeros(0), np.zeros(0)),
                                              series=(viser.uplot.Series(label="step"),
                                                      viser.uplot.Series(label=label, stroke="#1c7ed6", width=2)),
                                              title=label, aspect=1.6)
                           for key, label in CHARTS}

        @self.pause.on_click
        def _(_) -> None:
            self.share.pause(not self.share.paused)
            self.pause.label = "Resume training" if self.share.paused else "Pause training"
            self.status.content = self._status_text()

        @self.train_util.on_update
        def _(_) -> None:
            self.share.set_train_util(self.train_util.value)

        @self.output.on_update
        def _(_) -> None:
            on_settings(output=self.output.value)

        @self.max_res.on_update
        def _(_) -> None:
            on_settings(max_res=int(self.max_res.value))

        @self.cameras.on_update
        def _(_) -> None:
            on_cameras_shown(self.cameras.value)

    def training_ended(self) -> None:
        self.training = False
        self.pause.disabled = True
        self.update()

    def _status_text(self) -> str:
        step = self.share.step
        if not self.training:
            return f"**Trained model** at step {step:,} (not training)"
        total = f" / {self.total_steps:,}" if self.total_steps else ""
        if self.share.held:
            return f"**Paused** at step {step:,}{total}"
        if self.share.paused:
            return f"**Pausing** after step {step + 1:,}{total}"
        return f"**Training** step {step:,}{total} · {self._rate:.1f} steps/s"

    def update(self) -> None:
        now, step = time.monotonic(), self.share.step
        then, before = self._last
        if now > then:
            self._rate = (step - before) / (now - then)
        self._last = (now, step)
        self.status.content = self._status_text()
        if self.feed.poll():
            self.metrics.content = self.feed.table()
            for key, chart in self.charts.items():
                steps, values = self.feed.series[key]
                chart.data = (np.asarray(steps, dtype=np.float64), np.asarray(values, dtype=np.float64))


class Ticker(threading.Thread):
    """Calls `fn` about once a second until stopped."""

    def __init__(self, fn, period_s: float = 1.0):
        super().__init__(name="viewer-panel", daemon=True)
        self.fn, self.period_s = fn, period_s
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.wait(self.period_s):
            self.fn()

    def stop(self) -> None:
        self._stopping.set()
