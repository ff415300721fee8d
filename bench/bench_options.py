"""The options every bench shares, written once: `--quick` runs the same code path at small sizes (the CI
smoke run, tests/test_benches.py), `--out DIR` says where the results file goes.

Where the results go: `--out DIR` if given; else, with `--quick`, a fresh temporary directory (a smoke run
never overwrites bench/results/); else bench/results/ with `--write`; else nowhere (printed only).
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Sequence
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def add_options(parser: argparse.ArgumentParser, quick: dict[str, object]) -> None:
    """--quick (whose sizes are `quick`, option dest -> value; an option given explicitly still wins),
    --out and --write."""
    sizes = ", ".join(f"--{k.replace('_', '-')} {v}" for k, v in quick.items())
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run, same code path at small sizes ({sizes}); results into --out or a temp dir")
    parser.add_argument("--out", type=Path, help="directory for the results file (see bench/bench_options.py)")
    parser.add_argument("--write", action="store_true", help=f"write the results file into {RESULTS_DIR}")
    parser.set_defaults(_quick_sizes=quick)


def parse(parser: argparse.ArgumentParser, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse; with --quick, parse again with the quick sizes as defaults, so explicit options still win."""
    args = parser.parse_args(argv)
    if args.quick:
        parser.set_defaults(**args._quick_sizes)
        args = parser.parse_args(argv)
    return args


def results_file(args: argparse.Namespace, name: str) -> Path | None:
    """Where to write the results file `name` (None: print only); the directory exists."""
    if args.out is not None:
        folder = args.out
    elif args.quick:
        folder = Path(tempfile.mkdtemp(prefix="bench-quick-"))
    elif args.write:
        folder = RESULTS_DIR
    else:
        return None
    folder.mkdir(parents=True, exist_ok=True)
    return folder / name


def write_results(args: argparse.Namespace, name: str, text: str) -> None:
    """Write `text` to the results file, if any, and say where."""
    if (out := results_file(args, name)) is not None:
        out.write_text(text)
        print(f"written to {out}", flush=True)
