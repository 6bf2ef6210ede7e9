"""Training progress: a tqdm bar when attached to a terminal, plain log lines at `log_freq` always."""

from __future__ import annotations

import logging
import sys
import time

from tqdm import tqdm

log = logging.getLogger("train")


class Progress:
    def __init__(self, total: int, start: int, enabled: bool):
        self.total, self.start_step = total, start
        self.t_start = time.perf_counter()
        self.bar = tqdm(total=total, initial=start, desc="train", unit="step", dynamic_ncols=True,
                        disable=not (enabled and sys.stderr.isatty()))

    def update(self, step: int, postfix: dict) -> None:
        self.bar.n = step
        self.bar.set_postfix(postfix, refresh=False)
        self.bar.refresh()

    def eta_s(self, step: int) -> float:
        done = step - self.start_step
        if done <= 0:
            return float("nan")
        return (time.perf_counter() - self.t_start) / done * (self.total - step)

    def log_line(self, step: int, metrics: dict) -> None:
        parts = [f"step {step}/{self.total}"]
        for k in ("loss", "lr", "grad_norm", "steps_per_s", "data_share"):
            if k in metrics:
                parts.append(f"{k} {metrics[k]:.4g}")
        eta = self.eta_s(step)
        if eta == eta:
            parts.append(f"eta {_fmt_duration(eta)}")
        message = " | ".join(parts)
        if self.bar.disable:
            log.info(message)
        else:
            self.bar.write(message)

    def close(self) -> None:
        self.bar.close()


def _fmt_duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else f"{m}m{s:02d}s"
