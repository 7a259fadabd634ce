"""CLI: `python -m heartjax.data build|download|check` (see --help of each command)."""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence

import numpy as np

from heartjax.data.splits import SPLITS
from heartjax.data.tables import CLASS_NAMES
from heartjax.errors import Parser, UserError, cli_entry

DESCRIPTION = """\
Build, download and check ECG beat tables (187 samples at 125 Hz + a class label per row).

  build mitbih   MIT-BIH Arrhythmia records -> heart_big_train.parq / heart_big_test.parq
  build ptb      PTB Diagnostic records     -> heart_train.parq / heart_test.parq
  build wfdb     any beat-annotated WFDB database (e.g. svdb) -> heart_big_all.parq
  build noise    nstdb noise records        -> noise.npz (real noise for training)
  download       fetch the raw records from PhysioNet (wfdb.dl_database)
  check          validate a table, print its summary, optionally plot it
  split          split one table into train/test tables (stratified, seeded)

Example:
  python -m heartjax.data build mitbih --raw ../shared/data/physionet/mitdb --out data
  python -m heartjax.data build wfdb --raw ../shared/data/physionet/svdb-dev --database svdb \
      --leads ECG1 --out data/svdb
  python -m heartjax.data check data/heart_big_train.parq --plot data/plots
"""


# Shown in --help without importing the (slow to import) builder; a test pins them to
# physionet.MITBIH_LEADS / PTB_LEADS, which are the values used when --leads is not given.
DEFAULT_LEADS = {"mitbih": "MLII,V5,V2,V1,V4", "ptb": "ii"}


def _add_common_build(p: argparse.ArgumentParser, lead_default: str) -> None:
    p.add_argument("--raw", required=True, metavar="DIR",
                   help="folder of WFDB records (.hea/.dat[/.atr])")
    p.add_argument("--out", required=True, metavar="DIR", help="folder to write the tables into")
    p.add_argument("--seed", type=int, default=0, help="seed of the random split (default 0)")
    p.add_argument("--test-fraction", type=float, default=0.2, metavar="F",
                   help="share of beats (or patients) in the test table, 0<F<1 (default 0.2)")
    p.add_argument("--leads", default=None, metavar="A,B,...",
                   help=f"lead names in order of preference, chosen by name "
                        f"(default {lead_default})")
    p.add_argument("--skip-bad", action="store_true",
                   help="warn about and skip a record that is missing, corrupt or lacks the leads "
                        "(default: stop with an error)")


def _add_beat_options(p: argparse.ArgumentParser) -> None:
    """The options of a build from reference beat annotations (mitbih, wfdb)."""
    p.add_argument("--peaks", default="annotations", choices=("annotations", "detected"),
                   help="R positions: the reference annotations, or peaks detected by the "
                        "published method and matched to an annotation within 150 ms "
                        "(default annotations)")
    p.add_argument("--filter", default="none", choices=("none", "bandpass"),
                   help="none: beats cut from the lead as it is, as published; bandpass: the "
                        "lead at 125 Hz band-passed to 0.5-40 Hz first (default none)")
    p.add_argument("--records", default=None, metavar="A,B,...",
                   help="build only these records (default: all in RECORDS)")


def make_parser() -> Parser:
    """The argument parser of the data CLI."""
    parser = Parser(prog="python -m heartjax.data", description=DESCRIPTION,
                    formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    build = commands.add_parser("build", help="build beat tables from raw PhysioNet records",
                                description="Build beat tables with the published extraction "
                                            "(Kachuee et al. 2018; docs/data-pipeline.md).")
    datasets = build.add_subparsers(dest="dataset", metavar="DATASET", required=True)
    mit = datasets.add_parser(
        "mitbih", help="MIT-BIH Arrhythmia (5 AAMI classes N S V F Q)",
        description="MIT-BIH Arrhythmia records -> heart_big_train.parq and heart_big_test.parq "
                    "(--split none: heart_big_all.parq). Extra columns: record, sample (R peak at "
                    "360 Hz), database (mitdb), lead, rr_prev, rr_next, rr_local, rr_record "
                    "(seconds). Prints a per-class "
                    "count table compared with the published Kaggle set.")
    _add_common_build(mit, DEFAULT_LEADS["mitbih"])
    mit.add_argument("--split", default="kaggle", choices=SPLITS,
                     help="kaggle: stratified random split of all beats (intra-patient, "
                          "optimistic); interpatient: de Chazal DS1 -> train, DS2 -> test, paced "
                          "102 104 107 217 left out; none: one table of all beats "
                          "(default kaggle)")
    _add_beat_options(mit)

    other = datasets.add_parser(
        "wfdb", help="any WFDB database with beat annotations (.atr), 5 AAMI classes",
        description="Any beat-annotated WFDB database (e.g. the MIT-BIH Supraventricular "
                    "Arrhythmia Database, svdb) -> heart_big_all.parq, cut as MIT-BIH is: the "
                    "lead resampled from the record's own rate to 125 Hz, beats at the reference "
                    "annotations, AAMI classes from the beat symbols. Columns as `build "
                    "mitbih`, with --database in the database column: a config trains on "
                    "several such tables at once (data.train_files).")
    _add_common_build(other, "none: required")
    other.add_argument("--database", required=True, metavar="NAME",
                       help="short name of the database, written in the `database` column "
                            "(e.g. svdb)")
    other.add_argument("--split", default="none", choices=("none", "kaggle"),
                       help="none: one table of all beats (heart_big_all.parq); kaggle: a "
                            "stratified random split into heart_big_train/test.parq "
                            "(default none)")
    _add_beat_options(other)

    ptb = datasets.add_parser(
        "ptb", help="PTB Diagnostic (normal vs abnormal)",
        description="PTB Diagnostic records (searched recursively, e.g. ptbdb/patient001/"
                    "s0010_re) -> heart_train.parq and heart_test.parq. R peaks are detected by "
                    "the published method after conditioning (0.5 Hz baseline removal; inverted "
                    "when the QRS is mainly negative); "
                    "the label comes from the header's 'Reason for admission': Healthy control "
                    "-> 0 normal, Myocardial infarction -> 1 abnormal, other diagnoses excluded "
                    "unless --include-other. Split by patient when there are >= 2 patients, "
                    "else stratified by beat. Extra columns: record, sample (at 1000 Hz), lead, "
                    "inverted.")
    _add_common_build(ptb, DEFAULT_LEADS["ptb"])
    ptb.add_argument("--include-other", action="store_true",
                     help="label records with any other diagnosis (cardiomyopathy, bundle branch "
                          "block, ...) as abnormal instead of leaving them out")
    ptb.add_argument("--no-conditioning", action="store_true",
                     help="apply the published method literally: no 0.5 Hz baseline removal and "
                          "no inversion of leads whose QRS is mainly negative (default: both, "
                          "recorded in the 'inverted' column)")

    noise = datasets.add_parser(
        "noise", help="real recorder noise (nstdb's bw, ma, em) for train.augment.real_noise",
        description="The noise records of the MIT-BIH Noise Stress Test Database (bw baseline "
                    "wander, ma muscle artefact, em electrode motion, or the estimate "
                    "em_est118 where there is no em) -> OUT/noise.npz: one float32 (channels, "
                    "samples) array per kind at 125 Hz, in mV (docs/noise.md).")
    noise.add_argument("--raw", required=True, metavar="DIR",
                       help="the nstdb folder (e.g. ../shared/data/physionet/nstdb)")
    noise.add_argument("--out", required=True, metavar="DIR", help="folder to write noise.npz into")

    dl = commands.add_parser("download", help="download raw records from PhysioNet",
                             description="Download a whole PhysioNet database with "
                                         "wfdb.dl_database (mitbih: mitdb ~100 MB, "
                                         "ptb: ptbdb ~1.7 GB; svdb ~60 MB; noise: nstdb's bw, "
                                         "em and ma, ~6 MB). Needs internet access.")
    dl.add_argument("dataset", choices=("mitbih", "ptb", "svdb", "noise"),
                    help="which database (svdb: the MIT-BIH Supraventricular Arrhythmia "
                         "Database; `make data-interpatient` builds its 39 development records "
                         "only, the rest stays for testing)")
    dl.add_argument("--out", required=True, metavar="DIR", help="folder to download into")

    check = commands.add_parser("check", help="validate a beat table and summarise it",
                                description="Validate a beat table (.parq/.parquet or Kaggle "
                                            ".csv) and print rows, per-class counts, value range "
                                            "and extra columns; --plot also draws it.")
    check.add_argument("file", help="the table to check")
    check.add_argument("--dataset", choices=tuple(CLASS_NAMES), default=None,
                       help="label set (default: inferred from the file name, else the labels)")
    check.add_argument("--plot", metavar="DIR", default=None,
                       help="write class_balance.png, example_beats.png, mean_beats.png here")
    split = commands.add_parser(
        "split", help="split one beat table into the dataset's train/test tables",
        description="Split one table (e.g. the course's PTB sample) into the dataset's standard "
                    "train/test files, stratified by class and seeded: ptb -> heart_train.parq / "
                    "heart_test.parq, mitbih -> heart_big_train.parq / heart_big_test.parq.")
    split.add_argument("file", help="the table to split")
    split.add_argument("--out", required=True, metavar="DIR", help="folder to write the tables into")
    split.add_argument("--dataset", choices=tuple(CLASS_NAMES), default=None,
                       help="label set (default: inferred from the file name, else the labels)")
    split.add_argument("--test-fraction", type=float, default=0.2, metavar="F",
                       help="share of beats in the test table, 0<F<1 (default 0.2)")
    split.add_argument("--seed", type=int, default=0, help="seed of the split (default 0)")
    return parser


def run_split(args: argparse.Namespace) -> None:
    """`split FILE --out DIR`."""
    from pathlib import Path

    from heartjax.data.splits import stratified_split
    from heartjax.data.tables import TABLE_FILES, load_table, write_table

    table = load_table(args.file, args.dataset)
    train_idx, test_idx = stratified_split(table.y, args.test_fraction, args.seed)
    out = Path(args.out)
    names = TABLE_FILES[table.dataset]
    for name in names:
        if (out / name).exists():
            raise UserError(f"{out / name} exists; remove it or pick another --out")
    out.mkdir(parents=True, exist_ok=True)
    for name, idx in zip(names, (train_idx, test_idx)):
        write_table(table.subset(idx), out / name)
        counts = np.bincount(table.y[idx], minlength=len(table.class_names))
        detail = ", ".join(f"{c} {n}" for c, n in zip(table.class_names, counts))
        print(f"wrote {out / name}: {len(idx)} beats ({detail})")


def _names(text: str) -> list[str]:
    """A comma-separated list of names."""
    return [s for s in (part.strip() for part in text.split(",")) if s]


def run_build(args: argparse.Namespace) -> None:
    """`build mitbih|wfdb|ptb`."""
    from heartjax.data import physionet

    t0 = time.perf_counter()
    if args.dataset == "noise":
        from heartjax import noise

        path = noise.build_bank(args.raw, args.out)
        print(f"wrote {path} ({path.stat().st_size / 2**20:.1f} MiB)")
    elif args.dataset == "mitbih":
        leads = physionet.MITBIH_LEADS if args.leads is None else _names(args.leads)
        records = _names(args.records) if args.records is not None else None
        physionet.build_mitbih(args.raw, args.out, split=args.split, seed=args.seed,
                               test_fraction=args.test_fraction, peaks=args.peaks,
                               leads=leads, records=records, skip_bad=args.skip_bad,
                               filter=args.filter)
    elif args.dataset == "wfdb":
        if args.leads is None:
            raise UserError("build wfdb needs --leads: the lead names to use in order of "
                            "preference (svdb: ECG1, the lead nearest modified lead II)")
        records = _names(args.records) if args.records is not None else None
        physionet.build_mitbih(args.raw, args.out, split=args.split, seed=args.seed,
                               test_fraction=args.test_fraction, peaks=args.peaks,
                               leads=_names(args.leads), records=records,
                               skip_bad=args.skip_bad, filter=args.filter,
                               database=args.database)
    else:
        leads = physionet.PTB_LEADS if args.leads is None else _names(args.leads)
        physionet.build_ptb(args.raw, args.out, seed=args.seed, test_fraction=args.test_fraction,
                            include_other=args.include_other, leads=leads,
                            conditioned=not args.no_conditioning, skip_bad=args.skip_bad)
    print(f"built in {time.perf_counter() - t0:.1f} s")


def run_download(args: argparse.Namespace) -> None:
    """`download mitbih|ptb|svdb|noise`."""
    from heartjax.data import physionet

    if args.dataset == "noise":
        from heartjax import noise

        print(f"downloaded nstdb's {', '.join(noise.KINDS)} into {noise.download(args.out)}")
        return
    out = physionet.download(args.dataset, args.out)
    print(f"downloaded {physionet.DATABASES[args.dataset]} into {out}")


def run_check(args: argparse.Namespace) -> None:
    """`check FILE`."""
    from heartjax.data import explore
    from heartjax.data.tables import load_table

    table = load_table(args.file, args.dataset)
    print(explore.summary(table))
    if args.plot:
        for path in explore.write_plots(table, args.plot):
            print(f"wrote {path}")
    print("ok")


@cli_entry
def main(argv: Sequence[str] | None = None) -> None:
    """Parse `argv` and run the chosen command."""
    args = make_parser().parse_args(argv)
    commands = {"build": run_build, "download": run_download, "check": run_check, "split": run_split}
    commands[args.command](args)


if __name__ == "__main__":
    main()
