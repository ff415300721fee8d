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
        f"{cfg.get('max.poll.records')} (the worker's), reWriteBatchedInserts. Symbols: 3 per step, one per "
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
        "rows pre-rendered, the candles (staged by the insert trigger, merged at commit) included.",
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


# -- the data-shape sweep (bench/pipeline_sweep.py) -------------------------------------------------
SINK_TARGET, COPY_TARGET = 0.90, 0.75


def sweep_rates(sweep: dict[str, Any]) -> list[dict[str, Any]]:
    """Per (path, spacing): ticks/s with and without candles (all runs of a kind: total ticks / total
    seconds), their ratio, and the sink's pg_stat_statements profile summed per kind."""
    out = []
    for path in ("sink", "COPY"):
        for spacing in sorted({r["spacing_ms"] for r in sweep["runs"]}):
            runs = [r for r in sweep["runs"] if r["path"] == path and r["spacing_ms"] == spacing]
            if not runs:
                continue
            row: dict[str, Any] = {"path": path, "spacing_ms": spacing}
            for candles, kind in ((True, "with"), (False, "without")):
                mine = [r for r in runs if r["candles"] is candles]
                row[kind] = sum(r["ticks"] for r in mine) / sum(r["seconds"] for r in mine)
                row[f"{kind}_runs"] = [round(r["rate"]) for r in mine]
                row[f"{kind}_seconds"] = sum(r["seconds"] for r in mine)
                row[f"{kind}_ticks"] = sum(r["ticks"] for r in mine)
                row[f"{kind}_profile"] = {k: sum(r["profile"].get(k, 0) for r in mine)
                                          for k in ("statements", "rows", "exec_ms", "rollup_ms", "rollup_statements")}
                sizes: dict[int, int] = {}
                for r in mine:
                    for size, calls in r["profile"].get("sizes", {}).items():
                        sizes[int(size)] = sizes.get(int(size), 0) + calls
                row[f"{kind}_sizes"] = dict(sorted(sizes.items()))
            row["ratio"] = row["with"] / row["without"]
            row["target"] = SINK_TARGET if path == "sink" else COPY_TARGET
            out.append(row)
    return out


def _gap_line(r: dict[str, Any]) -> str:
    """A spacing's row of the lost-time table: extra wall and server seconds with candles."""
    wall = r["with_seconds"] - r["without_seconds"]
    server = (r["with_profile"]["exec_ms"] - r["without_profile"]["exec_ms"]) / 1000
    share = f"{server / wall:.0%}" if wall > 0 else "(no extra wall time)"
    sizes = ", ".join(f"{size}: {n:,}" for size, n in r["with_sizes"].items()) or "not recorded"
    return (f"| {r['spacing_ms']:g} | {wall:.2f} | {server:.2f} | {r['with_profile']['rollup_ms'] / 1000:.2f} | "
            f"{share} | {sizes} |")


def render_sweep_markdown(sweep: dict[str, Any], plot_name: str) -> str:
    rows = sweep_rates(sweep)
    sink = [r for r in rows if r["path"] == "sink"]
    # Runs before upserts were told apart counted every statement of the sink's role (metadata queries too).
    counted = sweep.get("counted", "statements")
    lines = [
        "# Pipeline bench: data-shape sweep",
        "",
        f"`{sweep['command']}`: one run on the real native stack, {os.cpu_count()} cores shared with other work. "
        f"Candle trigger: init.sql of commit `{sweep['trigger_commit']}` (bench at `{sweep['bench_commit']}`). "
        f"Symbols {', '.join(sweep['symbols'])} (SYMBOLS in .env; on a 3-partition topic), connector as committed "
        f"(tasks.max {sweep['connector'].get('tasks.max')}, batch.size {sweep['connector'].get('batch.size')}). "
        + "; ".join(sweep["notes"]) + ".",
        "",
        f"Per spacing (event time between consecutive ticks, symbols taking turns): {sweep['ticks']:,} ticks through "
        f"the sink per run (produced while the connector is paused, then resumed; until the last is visible), "
        f"{sweep['copy_ticks']:,} per COPY (rolled back); sink runs with / without candles in the order "
        f"{', '.join('with' if c else 'without' for c in sweep['order'])}"
        + (f" after a warm-up run, not counted ({sweep['ticks']:,} ticks at the first spacing, "
           f"{sweep['warm_up_ticks']:,} at the others)" if "warm_up_ticks" in sweep else "")
        + f", COPY runs {', '.join('with' if c else 'without' for c in sweep.get('copy_order', sweep['order']))}; "
        "each run in an event-time window of its own. Ticks/s of a kind: its total ticks / total seconds.",
        "",
        "## Targets",
        "",
        "| target | spacing ms | with candles ticks/s (runs) | without ticks/s (runs) | ratio | met |",
        "|---|---|---|---|---|---|",
        *[f"| {r['path']} with candles >= {r['target']:.0%} of without | {r['spacing_ms']:g} | {r['with']:,.0f} "
          f"({', '.join(f'{v:,}' for v in r['with_runs'])}) | {r['without']:,.0f} "
          f"({', '.join(f'{v:,}' for v in r['without_runs'])}) | {r['ratio']:.0%} | "
          f"{'yes' if r['ratio'] >= r['target'] else '**no**'} |" for r in rows],
        "",
        f"![ticks/s per spacing]({plot_name})",
        "",
        "## Where the sink's time goes (pg_stat_statements, track = all, summed over a kind's runs)",
        "",
        f"| spacing ms | candles | sink wall s | sink {counted} | rows per {counted[:-1]} "
        f"| event time per {counted[:-1]} | executing s (share of wall) | of which rollup trigger s "
        "| rollup ms per 1,000 ticks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in sink:
        for kind in ("with", "without"):
            p = r[f"{kind}_profile"]
            per = p["rows"] / max(p["statements"], 1)
            lines.append(
                f"| {r['spacing_ms']:g} | {kind} | {r[f'{kind}_seconds']:.2f} | {p['statements']:,} | {per:,.0f} | "
                f"{per * r['spacing_ms'] / 1000:,.2f} s | {p['exec_ms'] / 1000:.2f} "
                f"({p['exec_ms'] / 1000 / r[f'{kind}_seconds']:.0%}) | {p['rollup_ms'] / 1000:.2f} | "
                f"{p['rollup_ms'] / r[f'{kind}_ticks'] * 1000:,.1f} |")
    lines += [
        "",
        "Executing: the server time of the sink's own statements (its upserts with their trigger, which stages "
        "candles, and its commits, which merge them); the rest of the "
        "wall time is Connect (poll, convert, the transforms), the network and the waits between batches.",
        "",
        "## The sink's lost time with candles, and how much of it the database accounts for",
        "",
        "Same ticks with and without candles; wall: the sink's run time; server: its statements' execution time "
        "(pg_stat_statements). When the server's extra time is most of the wall's, the sink waits on the trigger "
        "(a task converts a poll, then writes it, then polls again: its conversion and its writes do not overlap).",
        "",
        "| spacing ms | extra wall s | extra server s | of which rollup statements s | server share of the extra wall "
        "| statements by rows per statement (with candles) |",
        "|---|---|---|---|---|---|",
        *[_gap_line(r) for r in sink],
    ]
    if not sweep.get("explains"):
        return "\n".join(lines) + "\n"
    lines += [
        "",
        "## The database's side alone (EXPLAIN ANALYZE of sink-shaped upserts, rolled back)",
        "",
        "Per spacing, statements of the sink's measured rows per statement (INSERT ... ON CONFLICT on the tick key "
        "from a staged batch), with the trigger and without in the order with, without, without, with; medians. "
        "Each merges its candles at its end (SET CONSTRAINTS ALL IMMEDIATE), as a transaction of one statement "
        "would: the sink's transactions merge once per ~17 statements.",
        f"Event times: {sweep['explain_window']}." if "explain_window" in sweep else
        "**Caveat (this run)**: each of these statements took a fresh event-time window after the spacing's COPY "
        "windows (rolled back: no candles), so each made new candles after a gap of minutes (0.1 ms) to hours "
        "(100 ms) and its trigger time includes filling the calendar over that gap (up to max_fill buckets per "
        "interval): the sink's steady state costs less (a sink run meets such a gap once per run, not once per "
        "statement).",
        "",
        "| spacing ms | rows per statement | statements of each kind | with candles ms | of which trigger ms "
        "| without ms | without / with |",
        "|---|---|---|---|---|---|---|",
        *[f"| {e['spacing_ms']:g} | {e['rows']:,} | {e['batches']} | {e['with_ms']:.2f} | {e['trigger_ms']:.2f} | "
          f"{e['without_ms']:.2f} | {e['without_ms'] / e['with_ms']:.0%} |" for e in sweep.get("explains", [])],
    ]
    for e in sweep["explains"]:
        if e.get("trigger_plans"):
            lines += ["", f"<details><summary>The trigger's statements at {e['spacing_ms']:g} ms, {e['rows']} rows "
                      "(auto_explain, one more statement, not counted)</summary>", "", "```",
                      *[line for plan in e["trigger_plans"] for line in (*plan.splitlines(), "")], "```", "</details>"]
    return "\n".join(lines) + "\n"


def render_sweep_plot(sweep: dict[str, Any], path: Path) -> None:
    rows = sweep_rates(sweep)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, kind in zip(axes, ("sink", "COPY"), strict=True):
        mine = [r for r in rows if r["path"] == kind]
        x = range(len(mine))
        ax.bar([i - 0.2 for i in x], [r["with"] for r in mine], 0.4, label="with candles", color="#1f77b4")
        ax.bar([i + 0.2 for i in x], [r["without"] for r in mine], 0.4, label="without candles", color="#aaaaaa")
        for i, r in zip(x, mine, strict=True):
            ax.text(i, max(r["with"], r["without"]) * 1.02, f"{r['ratio']:.0%}", ha="center", fontsize=9,
                    color="black" if r["ratio"] >= r["target"] else "red")
        ax.set_xticks(list(x), [f"{r['spacing_ms']:g} ms" for r in mine])
        ax.set_xlabel("event time between consecutive ticks")
        ax.set_ylabel("ticks/s")
        ax.set_title(f"{kind}: with / without candles (target {mine[0]['target']:.0%})" if mine else kind,
                     fontsize=10)
        ax.set_ylim(top=max((max(r["with"], r["without"]) for r in mine), default=1) * 1.15)
        ax.legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Data-shape sweep, candle trigger of {sweep['trigger_commit'].split()[0]} (one run, shared 2 cores)",
                 fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
