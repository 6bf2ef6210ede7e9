"""Compare the runs of a sweep: `python src/compare.py <sweep dir | MLflow experiment name>`.

Prints a table of the parameters that vary between the runs against each metric's final and
best values, cut to the terminal's width, writes the whole of it (compare.csv, compare.txt) with PNG plots (metric curves of all runs,
final metric against each varying parameter) to `<sweep dir>/compare/` (or --out), and logs them
to the sweep's MLflow parent run. The logic lives in `tracking.compare`.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import textwrap
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("target", help="a sweep directory (outputs/multiruns/...) or an MLflow experiment name")
    parser.add_argument("--metric", "-m", action="append", dest="metrics",
                        help="a metric to compare (repeatable); default: all but timing metrics")
    parser.add_argument("--tracking-uri", help="MLflow store (default: the sweep's, else $MLFLOW_TRACKING_URI, "
                                               "else sqlite:///outputs/mlflow.db)")
    parser.add_argument("--filter", default="", help="MLflow filter string for an experiment's runs, "
                                                     "e.g. \"params.batch_size = '64'\"")
    parser.add_argument("--out", help="folder for the table and plots")
    parser.add_argument("--local", action="store_true", help="read a sweep dir's job folders, not MLflow")
    parser.add_argument("--no-log", action="store_true", help="do not log the plots to the MLflow parent run")
    args = parser.parse_args(argv)

    from tracking.compare import CompareError, compare

    try:
        result = compare(args.target, tracking_uri=args.tracking_uri, metrics=args.metrics, out_dir=args.out,
                         log_to_parent=not args.no_log, local=args.local, filter_string=args.filter)
    except CompareError as exc:
        print(f"compare: {exc}", file=sys.stderr)
        return 2
    print(result["screen"])
    if result["left_out"]:
        print(textwrap.fill(f"({len(result['left_out'])} more columns, left out to fit the terminal: "
                            f"{', '.join(result['left_out'])})", shutil.get_terminal_size().columns))
    print(f"\nthe whole table: {result['csv']} (and compare.txt); {len(result['plots'])} plots in "
          f"{result['out_dir']}" + (f"; logged to MLflow run {result['parent_run_id']}" if result["logged"] else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
