"""The README's first command on a fresh clone: `scripts/stack.sh up` alone runs the whole pipeline.

A copy of the working tree as git would check it out (tracked and new files, nothing ignored: no .stack/, no
secrets), a state directory and ports of its own, and PRODUCER_SOURCE=replay (Yahoo is unreachable here): the
producer that `up` starts replays the sample recording, rows and candles appear, and `status` shows the
ticks flowing through every stage. The copy runs with this interpreter (CRYPTOPIPE_PYTHON, as the compose image
does) instead of installing a virtualenv of its own, and shares the downloaded artifacts; everything else is its
own.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from control.status_flow import FRESH_S
from core.settings import PROJECT_ROOT, Settings
from stack.ports import STACK_PORT_SETTINGS, claimed_ports
from tests.conftest import stack_processes
from tests.support import poll_until

pytestmark = pytest.mark.stack

SAMPLE = PROJECT_ROOT / "tests" / "fixtures" / "producer" / "sample_ticks.jsonl"


def fresh_copy(destination: Path) -> Path:
    """The files a clone of the working tree would hold."""
    listed = subprocess.run(["git", "-C", str(PROJECT_ROOT), "ls-files", "-z", "--cached", "--others",
                             "--exclude-standard"], capture_output=True, check=True).stdout.decode()
    for name in filter(None, listed.split("\0")):
        source = PROJECT_ROOT / name
        if source.is_file():
            (destination / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, destination / name)
    return destination


def run(clone: Path, env: dict[str, str], *args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "scripts/stack.sh", *args], cwd=clone, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


@pytest.fixture(scope="module")
def clone_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    clone = fresh_copy(tmp_path_factory.mktemp("clone"))
    state = clone / ".stack"
    with claimed_ports(STACK_PORT_SETTINGS) as ports:
        env = {**{k: v for k, v in os.environ.items() if not k.startswith("CRYPTOPIPE_") and k not in ports},
               **ports, "PRODUCER_SOURCE": "replay", "PRODUCER_REPLAY_SPEED": "0",
               "CRYPTOPIPE_PYTHON": sys.executable}
        try:
            up = run(clone, env, "up")
            yield {"clone": clone, "env": env, "up": up, "state": state}
        finally:
            down = run(clone, env, "down", "--purge", timeout=300)
            assert down.returncode == 0, down.stdout + down.stderr
            assert not stack_processes(state), "down left processes of the clone's stack behind"


def clone_settings(clone_up: dict) -> Settings:
    """The clone's settings, as its own processes read them."""
    saved = dict(os.environ)
    try:
        os.environ.clear()
        os.environ.update({**clone_up["env"], "CRYPTOPIPE_ENV_FILE": str(clone_up["clone"] / ".env"),
                           "CRYPTOPIPE_STATE": str(clone_up["state"])})
        return Settings.load()
    finally:
        os.environ.clear()
        os.environ.update(saved)


def sample_ticks() -> set[tuple[str, float, int]]:
    return {(t["symbol"], t["price"], t["event_time"]) for t in map(json.loads, SAMPLE.read_text().splitlines())}


def test_up_alone_starts_every_stage_and_the_producer(clone_up: dict) -> None:
    up = clone_up["up"]
    assert up.returncode == 0, up.stdout[-4000:] + up.stderr[-4000:]
    assert "generated POSTGRES_PASSWORD" in up.stdout  # a fresh clone: no secrets yet
    assert re.search(r"producer\s+started \(pid \d+\), source replay", up.stdout), up.stdout
    assert "stack up in" in up.stdout and "producer started" in up.stdout


def test_the_replayed_recording_lands_as_rows_and_candles(clone_up: dict) -> None:
    settings = clone_settings(clone_up)
    expected = sample_ticks()

    def landed() -> set[tuple[str, float, int]]:
        with psycopg.connect(settings.pg_dsn(), connect_timeout=5) as conn:
            rows = conn.execute("SELECT symbol, price, (extract(epoch FROM event_time) * 1000)::bigint "
                                "FROM crypto_prices").fetchall()
        return set(rows)

    assert poll_until(landed, lambda rows: rows >= expected, 180) == expected
    with psycopg.connect(settings.pg_dsn(), connect_timeout=5) as conn:
        candles = conn.execute("SELECT symbol, count(*), sum(tick_count) FROM view_crypto_candles "
                               "GROUP BY symbol ORDER BY symbol").fetchall()
    per_symbol = {s: sum(1 for t in expected if t[0] == s) for s in {t[0] for t in expected}}
    assert {symbol: ticks for symbol, _, ticks in candles} == per_symbol
    assert all(count == 10 for _, count, _ in candles)  # ten minutes of recording


def test_status_shows_the_ticks_flowing_through_every_stage(clone_up: dict) -> None:
    """Every number of the flow lines is checked, however slow the run: the "last minute" ones against what
    they must be at the moment `status` ran (the producer's count lapses to 0 once its last report is older
    than FRESH_S; rows landed in the last minute are counted just before and just after `status`)."""
    produced, settings = len(sample_ticks()), clone_settings(clone_up)

    def flow() -> dict[str, str]:
        out = run(clone_up["clone"], clone_up["env"], "status", timeout=120).stdout
        return {m[1]: m[2] for m in re.finditer(r"(?m)^flow (\w+):\s+(.*)$", out)}

    def landed_in_the_last_minute() -> int:
        with psycopg.connect(settings.pg_dsn(), connect_timeout=5) as conn:
            return conn.execute("SELECT count(*) FROM crypto_prices "
                                "WHERE landed_at >= now() - interval '1 minute'").fetchone()[0]

    caught_up = poll_until(flow, lambda f: f.get("connector", "").startswith("0 records behind"), 120)
    assert caught_up.get("connector", "").startswith("0 records behind"), caught_up
    most, seen, least = landed_in_the_last_minute(), flow(), landed_in_the_last_minute()  # nothing lands now
    producer = re.match(r"received (\d+), produced (\d+) ticks in the last minute \(source replay, exited; "
                        r"reported (\d+)s ago; since start received (\d+), produced (\d+)\)$", seen["producer"])
    assert producer, seen
    assert (int(producer[4]), int(producer[5])) == (produced, produced)
    age = int(producer[3])  # its last report, at exit, covered the whole replay (seconds long)
    if age != FRESH_S:  # printed rounded: at exactly FRESH_S either is right
        assert (int(producer[1]), int(producer[2])) == ((produced, produced) if age < FRESH_S else (0, 0)), seen
    landed = int(re.match(r"(\d+) rows landed", seen["postgres"])[1])
    assert most >= landed >= least, (most, seen["postgres"], least)
    assert seen["connector"].startswith("0 records behind on crypto.ticks"), seen
    assert seen["candles"].startswith("newest 1m candle ") and "2025-11-25 06:09 UTC" in seen["candles"], seen
