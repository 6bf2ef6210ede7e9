"""compare.py's table and plots as a person reads them: each varying parameter once, integer
parameters on integer axes, a title on every plot, a table that fits the terminal and a CSV that
holds everything."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from tracking import compare as cmp


def write_run(sweep: Path, job: int, seed: int, batch: int, metrics: dict[str, list[float]]) -> None:
    """A job folder as a sweep leaves it: config.yaml as runs write it (machine.seed copies seed, derived
    params beside), metrics.jsonl."""
    d = sweep / str(job)
    d.mkdir(parents=True)
    (d / "config.yaml").write_text(
        f"seed: {seed}\nbatch_size: {batch}\nmachine:\n  seed: {seed}\n  device_type: cpu\n"
        f"optimizer:\n  lr: 0.0001\nderived:\n  effective_batch_size: {batch * 2}\n"
        f"job_name: a_rather_long_job_name_of_a_sweep_with_many_runs_{job}\n")
    steps = max(len(v) for v in metrics.values())
    lines = [{"step": i + 1, "time": 0.0, **{k: v[i] for k, v in metrics.items() if i < len(v)}} for i in range(steps)]
    (d / "metrics.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


METRICS = {f"eval/{name}": [0.1, 0.2, 0.3] for name in ("pc_success", "avg_sum_reward", "avg_max_reward",
                                                        "avg_max_coverage")}
METRICS["train/loss"] = [1.0, 0.5, 0.25]


@pytest.fixture
def sweep(tmp_path):
    sweep = tmp_path / "sweep"
    for job, (seed, batch) in enumerate([(1, 8), (2, 16), (3, 8), (1, 16)]):
        write_run(sweep, job, seed, batch, METRICS)
    return sweep


def test_aliases_come_from_conf_and_each_parameter_is_listed_once(sweep):
    assert cmp.config_aliases()["machine.seed"] == "seed"  # conf/machine/default.yaml: seed: ${seed}
    runs = cmp.load_local(sweep)
    # not machine.seed beside seed, nor derived.effective_batch_size beside batch_size; job_name varies
    assert cmp.varying_params(runs) == ["batch_size", "job_name", "seed"]
    # an alias set apart from its source (machine.seed=5 by hand) is a parameter of its own
    runs[0].params["machine.seed"] = "5"
    assert "machine.seed" in cmp.varying_params(runs)


def test_every_plot_has_a_title_and_integer_parameters_integer_ticks(sweep, tmp_path, monkeypatch):
    figures = []
    monkeypatch.setattr(cmp, "_save", lambda fig, path: figures.append((fig, path)) or path)
    runs = cmp.load_local(sweep)
    cmp.write_plots(runs, ["batch_size", "seed"], ["train/loss"], tmp_path / "plots")
    assert [p.name for _, p in figures] == ["curves_train_loss.png", "train_loss_vs_batch_size.png",
                                            "train_loss_vs_seed.png"]
    for fig, path in figures:
        assert fig.axes[0].get_title(), path
    ticks = {p.name: [t.get_text() for t in fig.axes[0].get_xticklabels()] for fig, p in figures}
    assert ticks["train_loss_vs_seed.png"] == ["1", "2", "3"]
    assert ticks["train_loss_vs_batch_size.png"] == ["8", "16"]
    legend = [t.get_text() for t in figures[0][0].axes[0].get_legend().get_texts()]
    assert legend[0] == "0: batch_size=8, seed=1"  # each parameter once (was "seed=1, seed=1")


def test_the_printed_table_fits_the_terminal_and_the_csv_has_every_column(sweep, tmp_path, capsys, monkeypatch):
    from compare import main

    monkeypatch.setenv("COLUMNS", "80")  # what shutil.get_terminal_size reports for this terminal
    assert main([str(sweep), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out.splitlines()
    table = out[: out.index("")]
    assert max(len(line) for line in table) <= 80
    assert table[0].split()[:5] == ["run", "status", "batch_size", "job_name", "seed"]
    assert "..." in table[2]  # the long job name, shortened on the screen only
    assert any(line.startswith("(") and "more columns, left out to fit the terminal" in line for line in table)
    with (tmp_path / "out" / "compare.csv").open() as f:
        rows = list(csv.reader(f))
    assert len(rows[0]) == 2 + 3 + 2 * len(METRICS) and len(rows) == 5
    assert rows[1][3] == "a_rather_long_job_name_of_a_sweep_with_many_runs_0"
    assert str(tmp_path / "out" / "compare.csv") in out[-1]


def test_fit_table_leaves_out_best_values_before_final_ones():
    header = ["run", "status", "optimizer.lr", "a final", "a best", "b final", "b best"]
    rows = [["0", "FINISHED", "0.001", "1", "1", "2", "2"]]
    text, left_out = cmp.fit_table(header, rows, ["optimizer.lr"], width=42)
    assert text.splitlines()[0].split() == ["run", "status", "lr", "a", "final", "b", "final"]
    assert left_out == ["a best", "b best"]
    assert cmp.short_names(["optimizer.lr", "scheduler.lr", "seed"]) == {
        "optimizer.lr": "optimizer.lr", "scheduler.lr": "scheduler.lr", "seed": "seed"}
