"""The command line of `python -m heartjax.report`: flags in, one line per run out."""

from __future__ import annotations

import argparse

from heartjax.errors import Parser, cli_entry
from heartjax.report.build import build_report
from heartjax.report.formatting import missing


def _parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="python -m heartjax.report",
        description="Report on finished tuning runs: a summary table per run (the best trial as\n"
                    "the base row, the other trials by the tuning metric; validation and test\n"
                    "metrics), PNG plots and a PDF. Each trial's best checkpoint is evaluated\n"
                    "on the dataset's test table.",
        epilog="example:\n"
               "  python -m heartjax.report runs/mitbih runs/ptb-smoke --out reports/tuning\n"
               "writes summary.md, summary.csv, report.pdf and the PNG plots (those of each run\n"
               "in OUT/<run name> when several runs are given)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("run_dirs", nargs="+", metavar="RUN_DIR",
                        help="a tuning run folder (the --workdir of `python -m heartjax.tune`)")
    parser.add_argument("--out", required=True, metavar="DIR",
                        help="folder for the report (created; report files in it are replaced)")
    parser.add_argument("--data-dir", default=None, metavar="D",
                        help="folder with the dataset's train and test tables "
                             "(default: each run's config data.dir)")
    parser.add_argument("--target-recall", type=float, default=0.99, metavar="R",
                        help="binary datasets: recall of the positive class to reach; its "
                             "threshold is chosen on the validation split and shown on the test "
                             "PR curve (default 0.99)")
    parser.add_argument("--no-test", action="store_true",
                        help="leave the test table unread (the search's plots and validation "
                             "figures only): for a test set looked at once, after the choice, "
                             "as DS2 in the new-patient protocol")
    return parser


@cli_entry
def main(argv: list[str] | None = None) -> None:
    """CLI entry point."""
    args = _parser().parse_args(argv)
    result = build_report(args.run_dirs, args.out, args.data_dir, args.target_recall,
                          read_test=not args.no_test)
    for r in result["runs"]:
        b, metric = r["table"].iloc[0], r["metric"]
        test = b.get("test_macro_recall")
        print(f"{r['name']}: {len(r['table'])} trials; best {b['trial_id']} {metric} "
              f"{b[metric]:.3f}" + (f", test macro recall {test:.3f}" if not missing(test) else
                                    ", no test metrics"))
    print(f"report: {result['markdown']}, {result['csv']}, {result['pdf']}")
