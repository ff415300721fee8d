"""Warm start of the native stack (artifacts cached) and its idle memory.

Each run uses a fresh state directory (new PostgreSQL cluster, new Kafka storage) on free ports, so it
measures what a newcomer waits for after the first download: `stack up --no-producer` until "all
healthy, connector RUNNING" (PostgreSQL, Kafka, the registry, Connect, the connector, the supervisor and
the chart page). Then the stack idles for --idle-seconds and the bench takes the PSS of every process of
each service (bench/stack_driver.py: stack_memory_mb), before `down --purge`. The JVM heaps are the
*_HEAP_OPTS of .env (the environment wins, as for `stack up`). Writes bench/results/stack_cold_start.md
with --write.

    python bench/stack_cold_start.py --runs 3 --idle-seconds 60 --write
    python bench/stack_cold_start.py --quick    # CI smoke run: one run, 5 s idle, results into a temp dir
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))
from bench_options import add_options, parse, write_results  # noqa: E402
from stack_driver import stack_memory_mb  # noqa: E402

from core.settings import Settings  # noqa: E402
from stack.ports import claimed_ports  # noqa: E402

HEAP_SETTINGS = ("BROKER_HEAP_OPTS", "REGISTRY_HEAP_OPTS", "CONNECT_HEAP_OPTS")
TARGET_UP_S = 30.0
TARGET_IDLE_MIB = 1024.0


@dataclasses.dataclass
class Run:
    up_s: float
    steps: dict[str, float]
    memory_mib: dict[str, float]
    load: float  # the machine's 1-minute load average when `up` started
    foreign_jvms: int  # processes outside the stack running its JVMs' java binaries when memory was taken

    @property
    def total_mib(self) -> float:
        return sum(self.memory_mib.values())


def one_run(idle_seconds: float) -> Run:
    with tempfile.TemporaryDirectory(prefix="cold-start-") as state, claimed_ports() as ports:
        env = {**os.environ, "CRYPTOPIPE_STATE": state, **ports}
        load = os.getloadavg()[0]
        started = time.monotonic()
        up = subprocess.run([sys.executable, "-m", "stack", "up", "--no-fetch", "--no-producer"], cwd=ROOT, env=env,
                            capture_output=True, text=True, check=False)
        elapsed = time.monotonic() - started
        try:
            if up.returncode != 0:
                raise SystemExit(f"stack up failed:\n{up.stdout}\n{up.stderr[-3000:]}")
            time.sleep(idle_seconds)
            memory = stack_memory_mb(dataclasses.replace(Settings.load(), state_dir=Path(state)))
            foreign = foreign_jvms(Path(state))
        finally:
            subprocess.run([sys.executable, "-m", "stack", "down", "--purge"], cwd=ROOT, env=env,
                           capture_output=True, check=False)
        steps = {m[0]: float(m[1]) for m in re.findall(r"starting (\w+)\s+\.\.\. healthy .* in ([\d.]+)s", up.stdout)}
        if m := re.search(r"connector RUNNING in ([\d.]+)s", up.stdout):
            steps["connector"] = float(m.group(1))
        return Run(elapsed, steps, memory, load, foreign)


def foreign_jvms(state_dir: Path) -> int:
    """Processes outside the stack in state_dir that run one of its JVMs' java binaries. They map the same JDK
    files (lib/modules, classes.jsa), and PSS splits a shared page between every process that maps it, so
    while they run the stack's JVMs look smaller than they are alone."""
    ours, binaries = set(), set()
    for pid_file in state_dir.glob("*.pid"):
        with contextlib.suppress(ValueError, OSError, psutil.Error):
            root = psutil.Process(int(pid_file.read_text()))
            for proc in [root, *root.children(recursive=True)]:
                ours.add(proc.pid)
                with contextlib.suppress(psutil.Error):
                    if proc.name() == "java":
                        binaries.add(proc.exe())
    return sum(1 for proc in psutil.process_iter(["exe"]) if proc.pid not in ours and proc.info["exe"] in binaries)


def spread(values: list[float], fmt: str = "{:,.1f}") -> str:
    """min / median / max"""
    return " / ".join(fmt.format(v) for v in (min(values), statistics.median(values), max(values)))


def report(runs: list[Run], args: argparse.Namespace, heaps: dict[str, str]) -> list[str]:
    steps = list(runs[0].steps)
    # Memory from the runs no other JVM of the same JDK disturbed (all runs if every one was disturbed).
    alone = [r for r in runs if r.foreign_jvms == 0] or runs
    services = sorted({name for run in runs for name in run.memory_mib},
                      key=lambda n: -statistics.median(r.memory_mib.get(n, 0.0) for r in alone))
    ups, totals = [r.up_s for r in runs], [r.total_mib for r in alone]
    memory_runs = (f"the {len(alone)} runs without other JVMs" if len(alone) < len(runs) else
                   "every run" if alone[0].foreign_jvms == 0 else "every run, each with other JVMs: reads low")
    lines = [
        "# Native stack: warm start and idle memory",
        "",
        f"{datetime.now(UTC):%Y-%m-%d}, {args.machine}. Command: "
        f"`python bench/stack_cold_start.py --runs {args.runs} --idle-seconds {args.idle_seconds:g}`.",
        "",
        "Each run: a fresh state directory (new PostgreSQL cluster, new Kafka storage) on free ports, artifacts "
        "already cached (\"warm\": `stack up --no-fetch`, nothing downloaded or built), `stack up --no-producer` "
        "until every service is healthy and the connector and its task are RUNNING (the supervisor and the chart "
        f"page started too). Then {args.idle_seconds:g} s idle (no producer, no ticks), then the proportional set "
        "size (PSS: shared pages split between the processes sharing them) of each service's process and all its "
        "children (PostgreSQL's backends), in MiB; then `down --purge`. Times depend on what else the machine runs: "
        "each run's row gives the 1-minute load average when `up` started. PSS splits a page that several "
        "processes map between them, stack or not: `other JVMs` counts the processes outside the stack that ran "
        "the same java binaries when the memory was taken (another stack, a test run); they share the JDK's files "
        "(Connect alone maps about 115 MiB of the JDK's lib/modules), so a run with other JVMs reads low.",
        "",
        "JVM heaps (`.env`, the same values docker compose gives the containers): "
        + ", ".join(f"`{k}={v}`" for k, v in heaps.items()) + ".",
        "",
        f"## Summary (min / median / max; times over every run, memory over {memory_runs})",
        "",
        "| measure | min / median / max | target |",
        "|---|---|---|",
        f"| `stack up` to all healthy, connector RUNNING, s | {spread(ups)} | <= {TARGET_UP_S:g} s warm |",
        f"| idle PSS, all services, MiB | {spread(totals, '{:,.0f}')} | <= {TARGET_IDLE_MIB:,.0f} MiB (1.0 GiB) |",
    ]
    lines += [f"| idle PSS {name}, MiB | {spread([r.memory_mib.get(name, 0.0) for r in alone], '{:,.0f}')} | |"
              for name in services]
    lines += [f"| {step} ready, s | {spread([r.steps.get(step, 0.0) for r in runs])} | |" for step in steps]
    lines += [
        "",
        "## Per run",
        "",
        "| run | load at start | other JVMs | up s | " + " | ".join(f"{s} s" for s in steps) + " | "
        + " | ".join(f"{n} MiB" for n in services) + " | total MiB |",
        "|---|---|---|---|" + "---|" * (len(steps) + len(services) + 1),
    ]
    for i, run in enumerate(runs, 1):
        lines.append(f"| {i} | {run.load:.1f} | {run.foreign_jvms} | {run.up_s:.1f} | "
                     + " | ".join(f"{run.steps.get(s, 0.0):.1f}" for s in steps) + " | "
                     + " | ".join(f"{run.memory_mib.get(n, 0.0):,.0f}" for n in services)
                     + f" | {run.total_mib:,.0f} |")
    median_up, median_total = statistics.median(ups), statistics.median(totals)
    lines += [
        "",
        f"Median up: **{median_up:.1f} s** (target <= {TARGET_UP_S:g} s warm: "
        f"{'met' if median_up <= TARGET_UP_S else 'missed'}). "
        f"Median idle PSS ({memory_runs}): **{median_total:,.0f} MiB** (target <= {TARGET_IDLE_MIB:,.0f} MiB: "
        f"{'met' if median_total <= TARGET_IDLE_MIB else 'missed'}).",
    ]
    return lines


def main(args: argparse.Namespace) -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "fetch_artifacts.sh"), "all"], check=True)
    settings = Settings.load()
    heaps = {key: settings[key] for key in HEAP_SETTINGS}
    runs = []
    for i in range(args.runs):
        run = one_run(args.idle_seconds)
        runs.append(run)
        print(f"run {i + 1}/{args.runs}: up {run.up_s:.1f}s  "
              + "  ".join(f"{k}={v:.1f}s" for k, v in run.steps.items())
              + f"  idle PSS {run.total_mib:,.0f} MiB ({run.foreign_jvms} other JVMs): "
              + "  ".join(f"{k}={v:,.0f}" for k, v in sorted(run.memory_mib.items())), flush=True)
    lines = report(runs, args, heaps)
    print("\n".join(lines))
    write_results(args, "stack_cold_start.md", "\n".join(lines) + "\n")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--idle-seconds", type=float, default=60.0,
                        help="how long the stack idles after `up` before its memory is taken (default 60)")
    parser.add_argument("--machine", default=f"{os.cpu_count()} cores",
                        help="how the results file describes the machine (default: its core count)")
    add_options(parser, {"runs": 1, "idle_seconds": 5.0})
    main(parse(parser))
