"""Every bench runs, so none can rot: each script in bench/ with a `__main__` block is found by glob, must
offer `--quick` (the same code path at small sizes) and import no test code, and `python bench/X.py --quick
--out DIR` must exit 0 and leave a results file in DIR (never over bench/results/).

Benches that attach to a running stack (ATTACH) get the session stack's environment; the others start and
purge their own stacks on free ports. compose_bench needs a Docker engine with Compose v2 and the stand-in
images: skipped without one, unless CRYPTOPIPE_COMPOSE_TESTS=required (CI), as in tests/test_compose_up.py.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT
from tests.conftest import StackHandle
from tests.test_compose_up import engine_problem

BENCH_DIR = PROJECT_ROOT / "bench"
ATTACH = {"chart_bench", "producer_bench"}  # "needs a running stack": they start nothing themselves
NEEDS_ENGINE = {"compose_bench"}
QUICK_TIMEOUT_S = 900  # pipeline_bench --quick takes ~8 min on 2 shared cores


def is_bench(path: Path) -> bool:
    tree = ast.parse(path.read_text())
    return any(isinstance(node, ast.If) and "__main__" in ast.unparse(node.test) for node in tree.body)


BENCHES = sorted(path.stem for path in BENCH_DIR.glob("*.py") if is_bench(path))


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
    return found


def test_the_glob_finds_the_benches_the_readme_names() -> None:
    assert {"pipeline_bench", "history_bench", "contract_bench", "chart_bench", "producer_bench",
            "compose_bench", "stack_cold_start"} <= set(BENCHES), BENCHES
    assert "bench_options" not in BENCHES and "stack_driver" not in BENCHES


@pytest.mark.parametrize("bench", BENCHES)
def test_a_bench_offers_quick_and_imports_no_test_code(bench: str) -> None:
    path = BENCH_DIR / f"{bench}.py"
    test_imports = sorted(m for m in imported_modules(path) if m == "tests" or m.startswith(("tests.", "conftest")))
    assert not test_imports, f"bench/{bench}.py imports test code: {test_imports}"
    shown = subprocess.run([sys.executable, str(path), "--help"], cwd=PROJECT_ROOT, capture_output=True,
                           text=True, timeout=120, check=False)
    assert shown.returncode == 0, f"bench/{bench}.py --help exited {shown.returncode}:\n{shown.stderr[-2000:]}"
    assert "--quick" in shown.stdout, f"bench/{bench}.py has no --quick:\n{shown.stdout}"


def run_quick(bench: str, out: Path, env: dict[str, str]) -> tuple[subprocess.CompletedProcess, float]:
    started = time.monotonic()
    result = subprocess.run([sys.executable, str(BENCH_DIR / f"{bench}.py"), "--quick", "--out", str(out)],
                            cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=QUICK_TIMEOUT_S,
                            check=False)
    return result, time.monotonic() - started


def assert_ran(bench: str, result: subprocess.CompletedProcess, seconds: float, out: Path) -> None:
    print(f"bench/{bench}.py --quick: exit {result.returncode} in {seconds:.0f}s")
    assert result.returncode == 0, (f"bench/{bench}.py --quick exited {result.returncode}:\n"
                                    f"{result.stdout[-3000:]}\n{result.stderr[-4000:]}")
    written = [p for p in out.rglob("*") if p.is_file() and p.stat().st_size > 0]
    assert written, f"bench/{bench}.py --quick --out {out} wrote no results file:\n{result.stdout[-2000:]}"


@pytest.mark.parametrize("bench", sorted(set(BENCHES) - ATTACH - NEEDS_ENGINE))
def test_a_standalone_bench_runs_quick_on_its_own_stack(bench: str, tmp_path: Path) -> None:
    result, seconds = run_quick(bench, tmp_path / "results", dict(os.environ))
    assert_ran(bench, result, seconds, tmp_path / "results")


@pytest.mark.stack
@pytest.mark.parametrize("bench", sorted(set(BENCHES) & ATTACH))
def test_a_bench_runs_quick_against_the_running_stack(bench: str, stack: StackHandle, tmp_path: Path) -> None:
    result, seconds = run_quick(bench, tmp_path / "results", stack.env())
    assert_ran(bench, result, seconds, tmp_path / "results")


@pytest.mark.compose
@pytest.mark.parametrize("bench", sorted(set(BENCHES) & NEEDS_ENGINE))
def test_a_compose_bench_runs_quick_on_the_engine(bench: str, tmp_path: Path) -> None:
    if problem := engine_problem():
        if os.environ.get("CRYPTOPIPE_COMPOSE_TESTS") == "required":
            pytest.fail(f"CRYPTOPIPE_COMPOSE_TESTS=required but Docker Compose cannot run: {problem}")
        pytest.skip(f"no Docker engine with Compose v2 ({problem}); tests/compose/engine.sh install sets one up")
    subprocess.run(["bash", "tests/compose/build_standins.sh"], cwd=PROJECT_ROOT, check=True, timeout=2400)
    result, seconds = run_quick(bench, tmp_path / "results", dict(os.environ))
    assert_ran(bench, result, seconds, tmp_path / "results")
