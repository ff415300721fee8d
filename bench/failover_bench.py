"""Failover bench: how long a SIGKILLed Connect worker stalls the candles, and whether the short group
timeouts that make it quick cause rebalances without a fault.

Starts its own native stack (`python -m stack up --connect-workers 2`, temp state dir, free ports), the sink
with 3 tasks over the 2 workers, the real producer replaying 1,000 ticks/s (3 symbols, one per partition),
and always stops it with `down --purge`. In order, after --warm-up s of ticks (fresh JVMs):

  quiet   --quiet-seconds at 1,000 ticks/s, no fault: every group join in both workers' logs (the Connect
          group's and the sink consumers' group's generations) is a rebalance nobody asked for
  kill    --kills times: 1,000 ticks/s; --kill-at s in, the worker that is not the group's leader (the slower
          case: the leader holds a dead member's tasks back for the rebalance delay) is SIGKILLed; freshness
          (now - newest produced_at landed, stalest symbol) sampled every 100 ms; the time until every task
          RUNNING on the other worker; every tick landed once; the killed worker restarted between kills
          and SETTLE_SECONDS of ticks before the next

The group settings under test are the committed ones (connect/worker.properties, and the broker's
group.min.session.timeout.ms); the report prints them. Results: printed; failover.md and .json into
bench/results/ with --write, or --out DIR (--quick: 15 s warm-up, 30 s quiet, 1 kill; bench/bench_options.py).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_options import add_options, parse, results_file  # noqa: E402
from stack_driver import (  # noqa: E402
    ROOT,
    NativeStack,
    Series,
    freshness_probe,
    replay_until_landed,
    sampling,
    spread_symbols,
    write_replay,
)

TASKS = 3
RATE = 1000
SETTLE_SECONDS = 30  # ticks after a restarted worker took its tasks back, before the next kill
WORKER_FILE = ROOT / "connect" / "worker.properties"
BROKER_FILE = ROOT / "stack" / "config" / "kafka-broker.properties"
GROUP_SETTINGS = ("session.timeout.ms", "heartbeat.interval.ms", "scheduled.rebalance.max.delay.ms",
                  "consumer.session.timeout.ms", "consumer.heartbeat.interval.ms", "consumer.max.poll.interval.ms")
# AbstractCoordinator's line for a member that joined its group (Connect worker or sink consumer).
JOINED = re.compile(r"^\[(?P<at>[\d-]+ [\d:,]+)\] INFO \[(?:Worker|Consumer) clientId=(?P<client>[^,]+), "
                    r"groupId=(?P<group>[^\]]+)\] Successfully joined group with generation "
                    r"Generation\{generationId=(?P<generation>\d+)")


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def properties(path: Path) -> dict[str, str]:
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line and not line.startswith("#"))
    return {k.strip(): v.strip() for k, v in pairs}


def group_settings() -> dict[str, str]:
    worker = properties(WORKER_FILE)
    broker = properties(BROKER_FILE)
    return {**{k: worker.get(k, "(default)") for k in GROUP_SETTINGS},
            "broker group.min.session.timeout.ms": broker.get("group.min.session.timeout.ms", "(default 6000)")}


class JoinLog:
    """Group joins in the workers' logs from a mark on: (wall time, worker log, client, group, generation)."""

    def __init__(self, stack: NativeStack) -> None:
        self.stack = stack
        self.offsets: dict[Path, int] = {}

    def mark(self) -> None:
        self.offsets = {w.process.log_file: w.process.log_file.stat().st_size
                        for w in self.stack.workers() if w.process.log_file.exists()}

    def since_mark(self) -> list[dict[str, Any]]:
        joins = []
        for worker in self.stack.workers():
            path = worker.process.log_file
            if not path.exists():
                continue
            with path.open("rb") as f:
                f.seek(self.offsets.get(path, 0))
                text = f.read().decode(errors="replace")
            for line in text.splitlines():
                if m := JOINED.match(line):
                    at = datetime.strptime(m["at"], "%Y-%m-%d %H:%M:%S,%f").timestamp()  # the JVM's local time
                    joins.append({"at": at, "worker": path.stem, "client": m["client"], "group": m["group"],
                                  "generation": int(m["generation"])})
        return sorted(joins, key=lambda j: j["at"])


def freshness_summary(points: list[tuple[float, float]]) -> dict[str, float]:
    values = sorted(v for _, v in points)
    if not values:
        raise RuntimeError("no freshness samples")
    return {"samples": len(values), "p50": round(statistics.median(values), 3),
            "p99": round(values[min(len(values) - 1, int(len(values) * 0.99))], 3), "max": round(values[-1], 3)}


class Bench:
    def __init__(self, stack: NativeStack, work: Path) -> None:
        self.stack, self.work = stack, work
        self.joins = JoinLog(stack)
        self.tag = uuid.uuid4().hex[:4].upper()
        self.step = 0

    def stream(self, seconds: float, during: Any = None) -> tuple[Series, list[str], int]:
        """RATE ticks/s for `seconds` through the real producer, freshness sampled every 100 ms, until landed."""
        self.step += 1
        symbols = spread_symbols(f"F{self.tag}{self.step}X")
        count = int(seconds * RATE)
        replay = self.work / f"{symbols[0]}.jsonl"
        write_replay(replay, symbols, count, time.time_ns() // 1_000_000 + 2000, 1000 / RATE)
        fresh = Series("freshness")
        with sampling(fresh, freshness_probe(self.stack, symbols), 0.1):
            replay_until_landed(self.stack, replay, symbols, count, seconds,
                                lambda v: log(f"  {v:,.0f} of {count:,} landed"),
                                None if during is None else lambda: during(fresh.started))
        replay.unlink()
        return fresh, symbols, count

    def once_each(self, symbols: list[str]) -> tuple[int, int]:
        with self.stack.pg() as conn:
            return conn.execute("SELECT count(*), count(DISTINCT (symbol, event_time, price)) FROM crypto_prices"
                                " WHERE symbol = ANY(%s)", (symbols,)).fetchone()

    def quiet(self, seconds: float) -> dict[str, Any]:
        log(f"quiet: {RATE:,} ticks/s for {seconds:.0f} s, no fault; counting group joins in the workers' logs ...")
        self.joins.mark()
        fresh, symbols, count = self.stream(seconds)
        joins = self.joins.since_mark()
        result = {"seconds": seconds, "ticks": count, "joins": joins, "rebalances": len(joins),
                  "load_average_1min_at_end": os.getloadavg()[0],
                  "freshness": freshness_summary([p for p in fresh.points if p[0] > 2.0])}
        log(f"  => {len(joins)} group joins without a fault; freshness {result['freshness']}")
        return result

    def leader(self) -> str:
        """host:port of the Connect group's leader: the newest assignment the workers logged names it."""
        logs = [w.process.log_file.read_text(errors="replace") for w in self.stack.workers()
                if w.process.log_file.exists()]
        leaders = {m[-1] for text in logs if (m := re.findall(r"leaderUrl='http://([^/']+)/'", text))}
        if len(leaders) != 1:
            raise RuntimeError(f"the workers' logs name leaders {leaders}")
        return leaders.pop()

    def kill(self, kill_at: float, seconds: float) -> dict[str, Any]:
        """The worker that is not the leader dies: the leader holds its tasks back for
        scheduled.rebalance.max.delay.ms (a new leader would assign a dead leader's tasks at once)."""
        before = self.stack.tasks_by_worker()
        leader = self.leader()
        victim = next(w for w in before if w != leader)
        log(f"kill: tasks per worker {before}, leader {leader}; SIGKILL {victim} {kill_at:.0f} s into "
            f"{seconds:.0f} s of {RATE:,} ticks/s ...")
        info: dict[str, Any] = {"tasks_before": before, "leader": leader, "victim": victim}
        self.joins.mark()

        def kill_and_watch(started: float) -> None:
            time.sleep(max(0.0, kill_at - (time.monotonic() - started)))
            self.stack.kill_worker(victim)
            info["killed_at"], info["killed_wall"] = time.monotonic() - started, time.time()
            killed = time.monotonic()
            while time.monotonic() - killed < 120:
                with contextlib.suppress(Exception):
                    tasks = self.stack.status()["tasks"]
                    if len(tasks) == TASKS and all(t["state"] == "RUNNING" and t["worker_id"] != victim
                                                   for t in tasks):
                        info["tasks_moved_after_s"] = round(time.monotonic() - killed, 2)
                        return
                time.sleep(0.2)

        fresh, symbols, count = self.stream(seconds, during=kill_and_watch)
        killed_at = info.pop("killed_at")
        info["freshness_before_kill"] = freshness_summary([p for p in fresh.points if 2.0 < p[0] < killed_at])
        info["freshness_after_kill"] = freshness_summary([p for p in fresh.points if p[0] >= killed_at])
        info["stall_s"] = info["freshness_after_kill"]["max"]
        info["freshness_points"] = [(round(t - killed_at, 2), round(v, 3)) for t, v in fresh.points]
        joins = self.joins.since_mark()
        sink = [j for j in joins if j["group"].startswith("connect-") and j["at"] >= info["killed_wall"]]
        info["sink_group_rejoined_after_s"] = round(sink[0]["at"] - info["killed_wall"], 2) if sink else None
        info["joins"] = len(joins)
        rows, distinct = self.once_each(symbols)
        info.update(ticks=count, rows=rows, distinct=distinct, once_each=rows == distinct == count)
        info.pop("killed_wall")
        info["load_average_1min_at_end"] = os.getloadavg()[0]
        log(f"  => stall {info['stall_s']:.2f} s (freshness max after the kill), tasks moved after "
            f"{info.get('tasks_moved_after_s')} s, sink group rejoined after {info['sink_group_rejoined_after_s']} s; "
            f"every tick once: {info['once_each']}")
        return info

    def restart_killed_worker(self) -> None:
        log("the killed worker restarts (stack up --connect-workers 2) ...")
        self.stack.up(workers=2)
        self.wait_spread()
        log(f"settle: {SETTLE_SECONDS:.0f} s at {RATE:,} ticks/s (the restarted worker's rebalance is over) ...")
        self.stream(SETTLE_SECONDS)

    def wait_spread(self) -> None:
        """Until the sink's tasks run on both workers."""
        deadline = time.monotonic() + 180
        while len(self.stack.tasks_by_worker()) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError(f"tasks not spread over 2 workers again: {self.stack.tasks_by_worker()}")
            time.sleep(1)


def run(args: argparse.Namespace) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="failover-bench-"))
    stack = NativeStack(work / "stack", log)
    results: dict[str, Any] = {"settings": group_settings(), "rate": RATE, "tasks": TASKS, "kills": []}
    log(f"group settings under test: {results['settings']}")
    started = time.monotonic()
    try:
        stack.up(workers=2)
        stack.set_config({"tasks.max": str(TASKS)})
        bench = Bench(stack, work)
        bench.wait_spread()
        log(f"warm-up: {args.warm_up:.0f} s at {RATE:,} ticks/s (fresh JVMs) ...")
        bench.stream(args.warm_up)
        results["quiet"] = bench.quiet(args.quiet_seconds)
        for n in range(args.kills):
            if n:
                bench.restart_killed_worker()
            results["kills"].append(bench.kill(args.kill_at, args.kill_at + args.after_kill))
    finally:
        log("stopping the stack (down --purge) ...")
        with contextlib.suppress(Exception):
            stack.down()
        shutil.rmtree(work, ignore_errors=True)
    results["seconds"] = round(time.monotonic() - started)
    return results


def render_markdown(results: dict[str, Any]) -> str:
    quiet, kills = results["quiet"], results["kills"]
    stalls = [k["stall_s"] for k in kills]
    moves = [k.get("tasks_moved_after_s") for k in kills]
    settings = ", ".join(f"`{k}` {v}" for k, v in results["settings"].items())
    lines = [
        "# Failover: a Connect worker SIGKILLed",
        "",
        f"`{results['command']}`: one run ({results['seconds']} s) on the real native stack started by the bench "
        f"(2 Connect workers, the sink's {results['tasks']} tasks over them, one symbol per partition, the real "
        f"producer replaying {results['rate']:,} ticks/s), 2 cores shared with other work. Group settings as "
        f"committed: {settings}.",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        f"| freshness max stall <= 5 s when a worker is SIGKILLed | {', '.join(f'{s:.2f} s' for s in stalls)} "
        f"| {'yes' if stalls and max(stalls) <= 5 else '**no**'} |",
        f"| no rebalance without a fault ({quiet['seconds']:.0f} s at {results['rate']:,} ticks/s) "
        f"| {quiet['rebalances']} group joins | {'yes' if quiet['rebalances'] == 0 else '**no**'} |",
        "",
        "## Kills",
        "",
        "| kill | tasks on the killed worker | freshness before (p50 / max) | stall (freshness max after) | "
        "sink group rejoined | tasks RUNNING elsewhere | joins in both logs | every tick once | load average |",
        "|---|---|---|---|---|---|---|---|---|",
        *[f"| {i + 1} | {k['tasks_before'][k['victim']]} of {results['tasks']} "
          f"| {k['freshness_before_kill']['p50']:.3f} / {k['freshness_before_kill']['max']:.3f} s "
          f"| **{k['stall_s']:.2f} s** | {k['sink_group_rejoined_after_s']} s | {k.get('tasks_moved_after_s')} s "
          f"| {k['joins']} | {k['once_each']} ({k['rows']:,} rows) | {k['load_average_1min_at_end']:.1f} |"
          for i, k in enumerate(kills)],
        "",
        f"Tasks moved after {', '.join(f'{m} s' for m in moves)}. The killed worker is the one that is not the "
        "Connect group's leader (the leader holds a dead member's tasks back for the rebalance delay). Stall: the "
        "largest freshness (now minus the newest produced_at landed, stalest symbol) after the kill. Sink group "
        "rejoined: the first join of the sink's consumer group after the kill, from the worker's log. The joins "
        "column shows that the log parser sees rebalances. Load average: the machine's 1-minute load at the end "
        "of the step (2 cores).",
        "",
        "## Without a fault",
        "",
        f"{quiet['ticks']:,} ticks over {quiet['seconds']:.0f} s, {quiet['rebalances']} joins of either group in "
        f"either worker's log; freshness p50 {quiet['freshness']['p50']:.3f} s, p99 {quiet['freshness']['p99']:.3f} s,"
        f" max {quiet['freshness']['max']:.3f} s ({quiet['freshness']['samples']} samples); load average "
        f"{quiet['load_average_1min_at_end']:.1f} at its end.",
    ]
    if quiet["joins"]:
        lines += ["", "Joins seen:", "", *[f"- {j}" for j in quiet["joins"]]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quiet-seconds", type=float, default=600, help="no-fault window (default %(default)s)")
    parser.add_argument("--warm-up", type=float, default=30, help="seconds of ticks first (default %(default)s)")
    parser.add_argument("--kills", type=int, default=3, help="worker kills (default %(default)s)")
    parser.add_argument("--kill-at", type=float, default=15, help="seconds into each kill step (default %(default)s)")
    parser.add_argument("--after-kill", type=float, default=25, help="ticks produced after it (default %(default)s)")
    add_options(parser, {"warm_up": 15, "quiet_seconds": 30, "kills": 1, "kill_at": 10, "after_kill": 15})
    args = parse(parser)
    results = run(args)
    results["command"] = " ".join(["python bench/failover_bench.py", *sys.argv[1:]])
    markdown = render_markdown(results)
    print(markdown)
    if (out := results_file(args, "failover.md")) is not None:
        out.with_suffix(".json").write_text(json.dumps(results, indent=1, default=str))
        out.write_text(markdown)
        log(f"written: {out}, {out.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
