"""Cold start of the native stack, artifacts cached: `stack up` to "all healthy, connector RUNNING".

Each run uses a fresh state directory (new PostgreSQL cluster, new Kafka storage) on free ports, so it
measures what a newcomer waits for after the first download. Writes bench/results/stack_cold_start.md
with --write.

    python bench/stack_cold_start.py --runs 3 --write
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from stack.ports import claimed_ports  # noqa: E402


def one_run() -> tuple[float, dict[str, float]]:
    with tempfile.TemporaryDirectory(prefix="cold-start-") as state, claimed_ports() as ports:
        env = {**os.environ, "CRYPTOPIPE_STATE": state, **ports}
        started = time.monotonic()
        up = subprocess.run([sys.executable, "-m", "stack", "up", "--no-fetch", "--no-producer"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        subprocess.run([sys.executable, "-m", "stack", "down", "--purge"], cwd=ROOT, env=env, capture_output=True,
                       check=False)
        if up.returncode != 0:
            raise SystemExit(f"stack up failed:\n{up.stdout}\n{up.stderr[-3000:]}")
        steps = {m[0]: float(m[1]) for m in re.findall(r"starting (\w+)\s+\.\.\. healthy .* in ([\d.]+)s", up.stdout)}
        if m := re.search(r"connector RUNNING in ([\d.]+)s", up.stdout):
            steps["connector"] = float(m.group(1))
        return elapsed, steps


def main(args: argparse.Namespace) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "fetch_artifacts.sh"), "all"], check=True)
    totals, per_step = [], []
    for i in range(args.runs):
        total, steps = one_run()
        totals.append(total)
        per_step.append(steps)
        print(f"run {i + 1}/{args.runs}: {total:.1f}s  " + "  ".join(f"{k}={v:.1f}s" for k, v in steps.items()))
    lines = [
        "# Native stack cold start (artifacts cached)",
        "",
        f"Machine: {os.cpu_count()} cores. Command: `python bench/stack_cold_start.py --runs {args.runs}`.",
        "From `stack up` to all four services healthy and the connector and its task RUNNING.",
        "",
        "| run | total s | " + " | ".join(per_step[0]) + " |",
        "|---|---|" + "---|" * len(per_step[0]),
    ]
    for i, (total, steps) in enumerate(zip(totals, per_step, strict=True), 1):
        lines.append(f"| {i} | {total:.1f} | " + " | ".join(f"{v:.1f}" for v in steps.values()) + " |")
    lines += ["", f"Median: **{statistics.median(totals):.1f} s** (target: under 180 s)."]
    print("\n".join(lines))
    if args.write:
        out = ROOT / "bench" / "results" / "stack_cold_start.md"
        out.parent.mkdir(exist_ok=True)
        out.write_text("\n".join(lines) + "\n")
        print(f"written to {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--write", action="store_true", help="write bench/results/stack_cold_start.md")
    main(parser.parse_args())
