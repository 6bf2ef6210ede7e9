"""Compare the runs of a sweep (or any set of MLflow runs): which parameters vary, and what
each run reached. `src/compare.py` is the command line; see docs/SWEEPS_AND_TRACKING.md.

Runs come from
- a sweep directory (`outputs/multiruns/<day>/<time>_<job>`): with the `mlflow_parent.json` that
  `sweeps.mlflow_parent.ParentRunCallback` writes, the parent's MLflow children; without one
  (or with `--local`), each job folder's `config.yaml` and `metrics.jsonl`;
- an MLflow experiment name: its runs (parent runs of sweeps left out), optionally filtered.

For each run: the parameters whose values differ between runs, and for each metric its final
value (the last step) and its best value (the maximum for success/reward/accuracy/PSNR-like
metrics, the minimum otherwise). Plots: the curves of each metric over steps for all runs, and the
final value of each metric against each varying parameter. Tables and plots are written to the
output folder and, when the runs share an MLflow parent, logged to it under `compare/`.
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

PARENT_FILE = "mlflow_parent.json"  # written by sweeps.mlflow_parent
SWEEP_TAG = "hydrabot.sweep"
_HIGHER_IS_BETTER = re.compile(r"success|reward|return|acc|psnr|ssim|score|pc_", re.I)
# Timing/bookkeeping metrics are not worth a column unless asked for.
_DEFAULT_SKIP = re.compile(r"(_s$|_share$|per_s$|^system/|lr$|grad_norm|n_episodes$)")


class CompareError(Exception):
    """A user error: nothing to compare, an unknown experiment or metric."""


@dataclass
class RunRecord:
    name: str
    params: dict[str, str]
    history: dict[str, list[tuple[int, float]]] = field(default_factory=dict)
    status: str = "?"
    run_id: str | None = None
    parent_run_id: str | None = None

    def final(self, metric: str) -> float | None:
        points = self.history.get(metric)
        return max(points)[1] if points else None

    def best(self, metric: str) -> float | None:
        values = [v for _, v in self.history.get(metric, []) if not math.isnan(v)]
        if not values:
            return None
        return max(values) if higher_is_better(metric) else min(values)


def higher_is_better(metric: str) -> bool:
    return bool(_HIGHER_IS_BETTER.search(metric))


# ----------------------------------------------------------------------------- loading
def default_tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path('outputs').absolute() / 'mlflow.db'}"


def _client(uri: str):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def _mlflow_record(client, run) -> RunRecord:
    history = {}
    for key in run.data.metrics:
        history[key] = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, key)]
    tags = run.data.tags
    name = tags.get("run_dir") and Path(tags["run_dir"]).name or run.info.run_name or run.info.run_id[:8]
    return RunRecord(name=str(name), params=dict(run.data.params), history=history, status=run.info.status,
                     run_id=run.info.run_id, parent_run_id=tags.get("mlflow.parentRunId"))


def load_children(parent_run_id: str, tracking_uri: str) -> list[RunRecord]:
    client = _client(tracking_uri)
    parent = client.get_run(parent_run_id)
    runs = client.search_runs([parent.info.experiment_id],
                              filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'", max_results=10000)
    return [_mlflow_record(client, r) for r in runs]


def load_experiment(name: str, tracking_uri: str, filter_string: str = "") -> list[RunRecord]:
    client = _client(tracking_uri)
    exp = client.get_experiment_by_name(name)
    if exp is None:
        names = sorted(e.name for e in client.search_experiments())
        raise CompareError(f"no sweep directory or MLflow experiment named {name!r} (at {tracking_uri}); "
                           f"experiments there: {', '.join(names) or '(none)'}")
    runs = client.search_runs([exp.experiment_id], filter_string=filter_string, max_results=10000)
    return [_mlflow_record(client, r) for r in runs if r.data.tags.get(SWEEP_TAG) != "parent"]


def load_local(sweep_dir: Path) -> list[RunRecord]:
    """Each job folder of a sweep directory, from its own files (no MLflow needed)."""
    from omegaconf import OmegaConf

    from tracking.base import flatten_params
    from tracking.local_log import read_metrics

    records = []
    for job in sorted((p for p in sweep_dir.iterdir() if p.is_dir()), key=lambda p: (len(p.name), p.name)):
        config = job / "config.yaml"
        metrics = job / "metrics.jsonl"
        if not config.is_file() and not metrics.is_file():
            continue
        params = {}
        if config.is_file():
            params = {k: str(v) for k, v in flatten_params(OmegaConf.to_container(OmegaConf.load(config))).items()}
        history: dict[str, list[tuple[int, float]]] = {}
        for line in read_metrics(metrics):
            step = int(line.get("step", 0))
            for key, value in line.items():
                if key not in ("step", "time") and isinstance(value, (int, float)):
                    history.setdefault(key, []).append((step, float(value)))
        status = "FINISHED" if (job / "checkpoints").is_dir() or history else "?"
        records.append(RunRecord(name=job.name, params=params, history=history, status=status))
    return records


def load_target(target: str, tracking_uri: str | None = None, local: bool = False,
                filter_string: str = "") -> tuple[list[RunRecord], str | None, str | None, Path | None]:
    """The runs named by `target`; also the parent run id and tracking URI to log to (if any) and
    the sweep directory (None for an experiment)."""
    path = Path(target)
    if path.is_dir():
        parent_file = path / PARENT_FILE
        if parent_file.is_file() and not local:
            info = json.loads(parent_file.read_text())
            uri = tracking_uri or info["tracking_uri"]
            return load_children(info["run_id"], uri), info["run_id"], uri, path
        return load_local(path), None, None, path
    uri = tracking_uri or default_tracking_uri()
    runs = load_experiment(target, uri, filter_string)
    parents = {r.parent_run_id for r in runs}
    parent = parents.pop() if len(parents) == 1 else None
    return runs, parent, uri, None


# ----------------------------------------------------------------------------- analysis
CONF_DIR = Path(__file__).resolve().parent.parent.parent / "conf"
DERIVED_PREFIX = "derived."  # computed from other params (tracking's derived.* params)


def config_aliases(conf_dir: Path = CONF_DIR) -> dict[str, str]:
    """`{key: the key it copies}` for the options of conf/ that are one interpolation of another key
    (conf/machine/default.yaml: `seed: ${seed}` makes machine.seed an alias of seed). Read from the
    YAML files, not written down here, so a new alias in conf/ is known at once."""
    from omegaconf import DictConfig, OmegaConf

    aliases: dict[str, str] = {}
    simple = re.compile(r"^\$\{(\.*)([\w.]+)\}$")

    def walk(node: DictConfig, path: list[str]) -> None:
        for key in node.keys():
            if key == "defaults":
                continue
            child = node._get_node(key)
            if isinstance(child, DictConfig):
                walk(child, [*path, str(key)])
                continue
            m = simple.match(str(child._value())) if OmegaConf.is_interpolation(node, key) else None
            if not m:
                continue
            dots, target = m.groups()
            base = path[: len(path) - (len(dots) - 1)] if dots else []
            aliases[".".join([*path, str(key)])] = ".".join([*base, target])

    for yaml_file in sorted(conf_dir.rglob("*.yaml")) if conf_dir.is_dir() else []:
        rel = yaml_file.relative_to(conf_dir)
        if rel.parts[0] == "hydra" or len(rel.parts) < 2:
            continue
        text = yaml_file.read_text()
        package = [] if "@package _global_" in text else list(rel.parts[:-1])
        try:
            walk(OmegaConf.create(text) if text.strip() else OmegaConf.create({}), package)
        except Exception:  # a file OmegaConf cannot read on its own: no aliases from it
            continue
    return aliases


def varying_params(runs: list[RunRecord], aliases: dict[str, str] | None = None) -> list[str]:
    """The params whose values differ between runs, each once: an alias (`machine.seed` of `seed`)
    is left out where it equals its source in every run, and `derived.*` params (consequences of
    others, e.g. derived.effective_batch_size of batch_size) unless nothing else varies."""
    aliases = config_aliases() if aliases is None else aliases
    keys = sorted({k for r in runs for k in r.params})
    varying = [k for k in keys if len({r.params.get(k) for r in runs}) > 1]
    same = lambda a, b: all(r.params.get(a) == r.params.get(b) for r in runs)  # noqa: E731
    kept = [k for k in varying if not (k in aliases and aliases[k] in varying and same(k, aliases[k]))]
    primary = [k for k in kept if not k.startswith(DERIVED_PREFIX)]
    return primary or kept


def pick_metrics(runs: list[RunRecord], wanted: list[str] | None = None) -> list[str]:
    present = sorted({k for r in runs for k in r.history})
    if wanted:
        missing = [m for m in wanted if m not in present]
        if missing:
            raise CompareError(f"metric(s) {', '.join(missing)} not logged by any run; logged: "
                               f"{', '.join(present) or '(none)'}")
        return list(wanted)
    chosen = [m for m in present if not _DEFAULT_SKIP.search(m)]
    return chosen or present


def _fmt(value) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def table_rows(runs: list[RunRecord], params: list[str], metrics: list[str]) -> tuple[list[str], list[list[str]]]:
    header = ["run", "status", *params]
    for m in metrics:
        header += [f"{m} final", f"{m} best"]
    rows = []
    for r in runs:
        row = [r.name, r.status, *[r.params.get(p, "-") for p in params]]
        for m in metrics:
            row += [_fmt(r.final(m)), _fmt(r.best(m))]
        rows.append(row)
    return header, rows


def format_table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])


MAX_CELL = 24  # characters of a cell shown in the terminal table (the files keep them whole)


def short_names(keys: list[str]) -> dict[str, str]:
    """Each dotted key's shortest ending that no other key shares: optimizer.lr -> lr."""
    out = {}
    for key in keys:
        parts = key.split(".")
        for n in range(1, len(parts) + 1):
            tail = ".".join(parts[-n:])
            if not any(other != key and (other == tail or other.endswith("." + tail)) for other in keys):
                out[key] = tail
                break
        else:
            out[key] = key
    return out


def fit_table(header: list[str], rows: list[list[str]], params: list[str], width: int) -> tuple[str, list[str]]:
    """The table cut to `width` characters: long cells shortened, and where it is still too wide,
    params under their short names and the columns that do not fit left out, first the metrics' best values, then their final
    values from the last metric back. Returns the text and the (full) names of the columns left out."""
    def cut(text: str) -> str:
        text = str(text)
        return text if len(text) <= MAX_CELL else text[: MAX_CELL - 3] + "..."

    cols = [[cut(header[i]), *(cut(r[i]) for r in rows)] for i in range(len(header))]
    widths = [max(len(c) for c in col) for col in cols]
    if sum(widths) + 2 * (len(widths) - 1) > width:  # params under their short names
        names = short_names(params)
        cols = [[cut(names.get(header[i], header[i])), *col[1:]] for i, col in enumerate(cols)]
        widths = [max(len(c) for c in col) for col in cols]
    fixed = 2 + len(params)  # run, status, params: always shown (the run and what sets it apart)
    metric_cols = list(range(fixed, len(header)))
    priority = [i for i in metric_cols if header[i].endswith(" final")] + \
        [i for i in metric_cols if not header[i].endswith(" final")]
    keep = list(range(fixed))
    for i in priority:
        if sum(widths[j] + 2 for j in [*keep, i]) - 2 <= width:
            keep.append(i)
    keep.sort()
    line = lambda cells: "  ".join(c.ljust(widths[j]) for c, j in zip(cells, keep)).rstrip()  # noqa: E731
    body = [line([cols[j][0] for j in keep]), line(["-" * widths[j] for j in keep])]
    body += [line([cols[j][k + 1] for j in keep]) for k in range(len(rows))]
    return "\n".join(body), [header[i] for i in range(len(header)) if i not in keep]


# ----------------------------------------------------------------------------- plots
def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("_")


def _as_number(value: str | None) -> float | None:
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def _is_integer(value: str | None) -> bool:
    try:
        return value is not None and float(value) == int(float(value)) and "e" not in value.lower() \
            and "." not in value
    except (ValueError, OverflowError):
        return False


def write_plots(runs: list[RunRecord], params: list[str], metrics: list[str], out_dir: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []

    names = short_names(params)

    def label(r: RunRecord) -> str:
        return ", ".join(f"{names[p]}={r.params.get(p, '-')}" for p in params) or r.name

    for m in metrics:
        fig, ax = plt.subplots(figsize=(7, 4.5))
        for r in runs:
            points = sorted(r.history.get(m, []))
            if points:
                ax.plot([s for s, _ in points], [v for _, v in points], marker="o", markersize=3,
                        label=f"{r.name}: {label(r)}")
        ax.set_xlabel("step")
        ax.set_ylabel(m)
        ax.set_title(f"{m} ({'higher' if higher_is_better(m) else 'lower'} is better)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
        written.append(_save(fig, out_dir / f"curves_{_safe(m)}.png"))

        for p in params:
            xs = [r.params.get(p) for r in runs]
            ys = [r.final(m) for r in runs]
            pairs = [(x, y) for x, y in zip(xs, ys) if y is not None]
            if not pairs:
                continue
            fig, ax = plt.subplots(figsize=(5.5, 4))
            numeric = all(_as_number(x) is not None for x, _ in pairs)
            if numeric:
                ax.scatter([_as_number(x) for x, _ in pairs], [y for _, y in pairs])
                values = sorted({_as_number(x) for x, _ in pairs})
                if all(_is_integer(x) for x, _ in pairs):  # seeds, batch sizes, steps: no 1.5 on the axis
                    if len(values) <= 12:
                        ax.set_xticks(values, [str(int(v)) for v in values])
                    else:
                        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                elif len(values) > 2 and values[0] > 0 and values[-1] / values[0] >= 100:
                    ax.set_xscale("log")
            else:
                cats = sorted({str(x) for x, _ in pairs})
                ax.scatter([cats.index(str(x)) for x, _ in pairs], [y for _, y in pairs])
                ax.set_xticks(range(len(cats)), cats, rotation=30, ha="right")
            ax.set_xlabel(p)
            ax.set_ylabel(f"{m} (final)")
            ax.set_title(f"final {m} against {p} ({'higher' if higher_is_better(m) else 'lower'} is better)",
                         fontsize=10)
            ax.grid(alpha=0.3)
            written.append(_save(fig, out_dir / f"{_safe(m)}_vs_{_safe(p)}.png"))
    return written


# ----------------------------------------------------------------------------- entry point
def compare(target: str, tracking_uri: str | None = None, metrics: list[str] | None = None,
            out_dir: str | Path | None = None, log_to_parent: bool = True, local: bool = False,
            filter_string: str = "", width: int | None = None) -> dict:
    """Loads the runs, prints nothing; returns {"table": the full table, "screen": the table cut to
    `width` (default: the terminal's), "left_out": columns not on the screen, "header", "rows",
    "params", "metrics", "plots": [paths], "out_dir", "csv", "parent_run_id", "logged"}."""
    runs, parent, uri, sweep_dir = load_target(target, tracking_uri, local, filter_string)
    runs = sorted(runs, key=lambda r: (len(r.name), r.name))
    if not runs:
        raise CompareError(f"no runs found for {target!r}"
                           + (" (the sweep's jobs have not logged anything yet?)" if sweep_dir else ""))
    params = varying_params(runs)
    chosen = pick_metrics(runs, metrics)
    header, rows = table_rows(runs, params, chosen)
    table = format_table(header, rows)
    import shutil

    screen, left_out = fit_table(header, rows, params, width or shutil.get_terminal_size().columns)
    if out_dir is None:
        out_dir = (sweep_dir / "compare") if sweep_dir else Path("outputs") / "compare" / _safe(target)
    out_dir = Path(out_dir)
    plots = write_plots(runs, params, chosen, out_dir)
    (out_dir / "compare.txt").write_text(table + "\n")
    with (out_dir / "compare.csv").open("w", encoding="utf-8") as f:
        import csv

        csv.writer(f).writerows([header, *rows])
    logged = False
    if log_to_parent and parent and uri:
        _client(uri).log_artifacts(parent, str(out_dir), "compare")
        logged = True
    return {"table": table, "screen": screen, "left_out": left_out, "header": header, "rows": rows,
            "params": params, "metrics": chosen, "plots": plots, "out_dir": out_dir,
            "csv": out_dir / "compare.csv", "parent_run_id": parent, "logged": logged}
