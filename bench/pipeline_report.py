"""bench/pipeline_bench.py's results as a markdown report and two PNG plots."""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

CANDLES = "sink backlog (1 task, candles)"
NO_CANDLES = "sink backlog (1 task, no candles: trigger disabled)"
COPY_WITH = "COPY into crypto_prices, with candles (rolled back)"
COPY_WITHOUT = "COPY into crypto_prices, without candles (rolled back)"
AFTER_BACKLOG = "steady 1k/s, right after backlog + COPYs (1 task)"


def _rate(results: dict[str, Any], path: str) -> float:
    return next((r["rate"] for r in results["rates"] if r["path"] == path), float("nan"))


def targets(results: dict[str, Any]) -> list[tuple[str, str, bool]]:
    """(target, measured, met) for the issue's targets."""
    copy_with, sink, sink_plain = _rate(results, COPY_WITH), _rate(results, CANDLES), _rate(results, NO_CANDLES)
    after = results["freshness"].get(AFTER_BACKLOG, {})
    return [
        ("COPY into crypto_prices with candles maintained >= 150,000 ticks/s", f"{copy_with:,.0f} ticks/s",
         copy_with >= 150_000),
        ("sink with candles >= 85% of the same sink without candle maintenance",
         f"{sink:,.0f} / {sink_plain:,.0f} = {sink / sink_plain:.0%}", sink >= 0.85 * sink_plain),
        ("sink with candles >= 25,000 ticks/s on one task", f"{sink:,.0f} ticks/s", sink >= 25_000),
        ("no multi-second freshness stall right after a backlog (max < 1 s at 1,000 ticks/s)",
         f"p99 {after.get('p99', float('nan')) * 1000:,.0f} ms, max {after.get('max', float('nan')) * 1000:,.0f} ms",
         after.get("max", 99) < 1.0),
    ]


def render_markdown(results: dict[str, Any]) -> str:
    cfg = results.get("connector", {})
    lines = [
        "# End-to-end pipeline benchmark",
        "",
        f"`{results['command']}`: one run on the real native stack (started by the bench on free ports, stopped "
        f"with `down --purge`), {os.cpu_count()} cores shared with other work, {platform.python_version()} for the "
        f"producer and the bench. Connector as committed unless a row says otherwise: tasks.max "
        f"{cfg.get('tasks.max')}, batch.size {cfg.get('batch.size')}, max.poll.records "
        f"{cfg.get('consumer.override.max.poll.records')}, reWriteBatchedInserts. Symbols: 3 per step, one per "
        "partition of the 3-partition topic. " + "; ".join(results.get("notes", [])) + ".",
        "",
        "## Targets",
        "",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {t} | {m} | {'yes' if ok else '**no**'} |" for t, m, ok in targets(results)],
        "",
        "## Throughput",
        "",
        "| path | ticks | seconds | ticks/s |",
        "|---|---|---|---|",
        *[f"| {r['path']} | {r['ticks']:,} | {r['seconds']:.2f} | {r['rate']:,.0f} |" for r in results["rates"]],
        "",
        "Sink rates: from resuming the paused connector (or the first record on the broker) to the last tick "
        "visible in crypto_prices. Producer: broker end offsets, first to last record. COPY: server-side, the "
        "rows pre-rendered, the insert trigger's statement-level rollup included.",
        "",
        "![ticks/s per path](pipeline_throughput.png)",
        "",
        "## Freshness (now - newest produced_at visible in crypto_prices, of the stalest of the step's symbols; "
        "sampled every 100 ms)",
        "",
        "| step | samples | p50 ms | p99 ms | max ms | samples > 1 s | autovacuum running (of 0.5 s samples) "
        "| checkpoints |",
        "|---|---|---|---|---|---|---|---|",
        *[f"| {label} | {f['samples']} | {f['p50'] * 1000:,.0f} | {f['p99'] * 1000:,.0f} | {f['max'] * 1000:,.0f} "
          f"| {f['over_1s']} | {f['autovacuum_samples']} | {f['checkpoints']} |"
          for label, f in results["freshness"].items()],
        "",
        "![freshness over time](pipeline_freshness.png)",
        "",
    ]
    if failover := results.get("failover"):
        lines += [
            "## Failover (2 workers, 3 tasks, 1,000 ticks/s, one worker SIGKILLed)",
            "",
            f"- tasks per worker before: {failover['tasks_before']}; killed {failover['victim']} "
            f"(pid {failover.get('pid')})",
            f"- its tasks RUNNING on the other worker after **{failover.get('tasks_moved_after_s', 'never')} s** "
            f"(session timeout 10 s + scheduled.rebalance.max.delay.ms 10 s); after: {failover.get('tasks_after')}",
            f"- ticks produced {failover['ticks']:,}, rows {failover['rows']:,}, distinct ticks "
            f"{failover['distinct_rows']:,}; {failover['candles']} one-minute candles, equal to pandas' OHLC of "
            f"the produced ticks: **{'yes' if failover['candles_equal_pandas'] else 'NO'}**",
            "",
        ]
    lines += ["## Memory (PSS of every process of a service, MB)", ""]
    memory = results.get("memory", {})
    services = sorted({s for m in memory.values() for s in m})
    lines += ["| when | " + " | ".join(services) + " | total |", "|---|" + "---|" * (len(services) + 1)]
    for label, m in memory.items():
        lines.append(f"| {label} | " + " | ".join(f"{m.get(s, 0):,.0f}" for s in services)
                     + f" | {sum(m.values()):,.0f} |")
    return "\n".join(lines) + "\n"


def render_plots(results: dict[str, Any], out: Path) -> None:
    rates = results["rates"]
    fig, ax = plt.subplots(figsize=(11, 0.45 * len(rates) + 1.5))
    labels = [r["path"] for r in rates][::-1]
    values = [r["rate"] for r in rates][::-1]
    colors = ["#888888" if "COPY" in label else "#d62728" if "seed" in label else "#2ca02c" if "producer" in label
              else "#1f77b4" for label in labels]
    bars = ax.barh(labels, values, color=colors)
    ax.set_xscale("log")
    ax.set_xlabel("ticks/s (log scale)")
    ax.set_title("Ticks/s per path (one run, 2 cores)")
    for bar, value in zip(bars, values, strict=True):
        ax.text(value * 1.05, bar.get_y() + bar.get_height() / 2, f"{value:,.0f}", va="center", fontsize=8)
    ax.set_xlim(right=max(values) * 4)
    fig.tight_layout()
    fig.savefig(out / "pipeline_throughput.png", dpi=110)
    plt.close(fig)

    fresh = results["freshness"]
    fig, axes = plt.subplots(len(fresh), 1, figsize=(11, 2.4 * len(fresh)), sharey=True, squeeze=False)
    for ax, (label, f) in zip(axes[:, 0], fresh.items(), strict=True):
        times = [t for t, _ in f["points"]]
        ax.plot(times, [v * 1000 for _, v in f["points"]], lw=0.8)
        for t in f.get("autovacuum_at", []):
            ax.axvspan(t - 0.25, t + 0.25, color="orange", alpha=0.25, lw=0)
        if "marker" in f:
            ax.axvline(f["marker"], color="red", lw=1)
            ax.text(f["marker"], 1, " worker killed", color="red", fontsize=8, va="bottom")
        ax.set_yscale("log")
        ax.set_ylabel("freshness ms")
        ax.set_title(f"{label}: p50 {f['p50'] * 1000:.0f} ms, p99 {f['p99'] * 1000:.0f} ms, "
                     f"max {f['max'] * 1000:.0f} ms (orange: autovacuum running)", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[-1, 0].set_xlabel("seconds since the step's first tick landed")
    fig.tight_layout()
    fig.savefig(out / "pipeline_freshness.png", dpi=110)
    plt.close(fig)
