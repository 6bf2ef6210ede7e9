"""Training progress a person can follow, on a terminal or in a log file.

- On a terminal: a tqdm bar, with the `log_freq` step lines and every other log line written above
  it (tqdm's logging redirect), so they also reach `<run>/train.log`.
- Without one (CI logs, `nohup`, SLURM, `progress_bar=false`): a plain progress line every
  `progress_interval_s` seconds as well as every `log_freq` steps, so a slow machine is never silent
  for long.
- `<run>/train.log` always holds the log lines: Hydra's job log where Hydra set one up, else
  (spawned ranks, a job logging config without a file) a handler added here (`run_log`).
- `summary()` is the run's last words: where its folder, checkpoint, videos/images and tracking
  run are, and the command that opens the tracking UI.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from pathlib import Path

from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

log = logging.getLogger("train")

LOG_FILENAME = "train.log"
MEDIA_SUFFIXES = (".mp4", ".gif", ".png", ".jpg", ".webm")


class Progress:
    """`bar`: show a tqdm bar when stderr is a terminal; `active`: this process reports (rank 0)."""

    def __init__(self, total: int, start: int, bar: bool = True, active: bool = True, interval_s: float = 30.0,
                 clock=time.monotonic):
        self.total, self.start_step = total, start
        self.clock, self.interval_s = clock, interval_s
        self.t_start = self.last_line = clock()
        self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
                        disable=not (active and bar and sys.stderr.isatty()))
        self.plain = active and self.bar.disable
        self._redirect = contextlib.ExitStack()
        if not self.bar.disable:
            self._redirect.enter_context(logging_redirect_tqdm())

    def update(self, step: int, postfix: dict) -> None:
        """Called every step: moves the bar, or prints a plain line when `interval_s` has passed."""
        if not self.bar.disable:
            self.bar.n = step
            self.bar.set_postfix(postfix, refresh=False)
            self.bar.refresh()
        elif self.plain and self.clock() - self.last_line >= self.interval_s:
            parts = [f"step {step}/{self.total} ({step / max(self.total, 1):.0%})",
                     *(f"{k} {v}" for k, v in postfix.items()), f"{self.rate(step):.3g} steps/s"]
            eta = self.eta_s(step)
            if eta == eta:
                parts.append(f"eta {fmt_duration(eta)}")
            self._line(" | ".join(parts))

    def rate(self, step: int) -> float:
        elapsed = self.clock() - self.t_start
        return (step - self.start_step) / elapsed if elapsed > 0 else float("nan")

    def eta_s(self, step: int) -> float:
        done = step - self.start_step
        if done <= 0:
            return float("nan")
        return (self.clock() - self.t_start) / done * (self.total - step)

    def log_line(self, step: int, metrics: dict) -> None:
        """The `log_freq` line: the step's metrics and the time left."""
        parts = [f"step {step}/{self.total}"]
        for k in ("loss", "lr", "grad_norm", "steps_per_s", "data_share"):
            if k in metrics:
                parts.append(f"{k} {metrics[k]:.4g}")
        eta = self.eta_s(step)
        if eta == eta:
            parts.append(f"eta {fmt_duration(eta)}")
        self._line(" | ".join(parts))

    def note(self, message: str) -> None:
        """A line about what the run does next (an evaluation, say), so a long pause has a reason."""
        if self.plain or not self.bar.disable:
            self._line(message)

    def _line(self, message: str) -> None:
        log.info(message)
        self.last_line = self.clock()

    def close(self) -> None:
        self.bar.close()
        self._redirect.close()


def fmt_duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"


@contextlib.contextmanager
def run_log(run_dir: Path):
    """Makes sure the log lines reach `<run_dir>/train.log` (and the console) for the block.

    Hydra's job logging already writes that file in a plain run or a sweep job; a spawned rank, or a
    job logging config without a file, has none, and gets a handler here (removed afterwards)."""
    root = logging.getLogger()
    path = os.path.abspath(Path(run_dir) / LOG_FILENAME)
    added: list[logging.Handler] = []
    if not any(isinstance(h, logging.FileHandler) and h.baseFilename == path for h in root.handlers):
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(path, encoding="utf-8")
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        added.append(handler)
    if not any(type(h) is logging.StreamHandler for h in root.handlers):  # noqa: E721 (not a FileHandler)
        console = logging.StreamHandler(sys.stdout)
        console.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        added.append(console)
    level = root.level
    if added and (root.level == logging.NOTSET or root.level > logging.INFO):
        root.setLevel(logging.INFO)
    for handler in added:
        root.addHandler(handler)
    try:
        yield path
    finally:
        for handler in added:
            root.removeHandler(handler)
            handler.close()
        root.setLevel(level)


def summary(status: str, run_dir: Path, checkpoint: Path | None, media: list[Path], tracking: dict | None) -> str:
    """The lines that end a run: what happened and where everything is."""
    lines = [f"run {status.lower()}: {run_dir}"]
    if checkpoint is not None:
        lines.append(f"  checkpoint   {checkpoint}")
    shown = [p for p in media if p.suffix.lower() in MEDIA_SUFFIXES and p.exists()]
    for path in shown[:4]:
        lines.append(f"  {'video' if path.suffix.lower() in ('.mp4', '.gif', '.webm') else 'image':<12} {path}")
    if len(shown) > 4:
        lines.append(f"  ... and {len(shown) - 4} more in {shown[0].parent}")
    lines.append(f"  log          {Path(run_dir) / LOG_FILENAME}")
    lines.append(f"  metrics      {Path(run_dir) / 'metrics.jsonl'}")
    if tracking:
        named = f" {tracking['run_name']!r}" if tracking.get("run_name") else ""
        lines.append(f"  {tracking['name']:<12} run{named} ({tracking['run_id']}) in experiment "
                     f"{tracking['experiment']!r} at {tracking['uri']}")
        if tracking.get("command"):
            lines.append(f"  {'UI':<12} {tracking['command']}")
        if tracking.get("url"):
            lines.append(f"  {'run page':<12} {tracking['url']}")
        if tracking.get("experiment_url"):
            lines.append(f"  {'all runs':<12} {tracking['experiment_url']}")
    return "\n".join(lines)
