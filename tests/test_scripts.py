"""The shell scripts find Python one way (scripts/lib/python.sh): CRYPTOPIPE_PYTHON when set (the compose image
sets it), else the project's virtualenv."""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core.settings import PROJECT_ROOT

SCRIPTS = sorted((PROJECT_ROOT / "scripts").glob("*.sh"))


def code(script: Path) -> str:
    """The script without its comments."""
    return "\n".join(line for line in script.read_text().splitlines() if not line.lstrip().startswith("#"))


def find_python(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", "-c", 'source scripts/lib/settings.sh && source scripts/lib/python.sh && '
                                         'find_python && echo "PYTHON=$PYTHON"'],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120, check=False)


@pytest.mark.parametrize("script", [s for s in SCRIPTS if re.search(r"python", code(s), re.I)], ids=lambda s: s.name)
def test_every_script_that_runs_python_finds_it_through_the_one_rule(script: Path) -> None:
    text = code(script)
    assert 'source "$(dirname "${BASH_SOURCE[0]}")/lib/python.sh"' in text and "\nfind_python\n" in text
    runs = re.findall(r"(\S*python\S*)\s+-m\s", text, re.I)
    assert runs and set(runs) == {'"$PYTHON"'}, runs


def test_an_interpreter_named_by_crypto_pipe_python_is_used_and_no_virtualenv_made(tmp_path: Path) -> None:
    env = {**os.environ, "CRYPTOPIPE_PYTHON": sys.executable, "CRYPTOPIPE_CACHE": str(tmp_path)}
    result = find_python(env)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"PYTHON={sys.executable}"
    assert list(tmp_path.iterdir()) == []


def test_an_interpreter_without_the_project_is_refused_with_a_reason(tmp_path: Path) -> None:
    bare = tmp_path / "python"
    bare.write_text("#!/bin/sh\nexit 1\n")
    bare.chmod(0o755)
    result = find_python({**os.environ, "CRYPTOPIPE_PYTHON": str(bare)})
    assert result.returncode != 0
    assert f"CRYPTOPIPE_PYTHON={bare} is not a Python with the project's dependencies" in result.stderr


def test_without_it_the_projects_virtualenv_is_used(tmp_path: Path) -> None:
    """The virtualenv ensure_venv keeps (CRYPTOPIPE_VENV here: this interpreter's, already installed)."""
    venv = Path(sys.prefix)
    if not list(venv.glob(".installed-*")):
        pytest.skip("the tests do not run in a virtualenv made by scripts/lib/python.sh")
    stamp = venv / f".installed-{hashlib.sha1((PROJECT_ROOT / 'pyproject.toml').read_bytes()).hexdigest()[:12]}"
    if not stamp.exists():  # else ensure_venv would reinstall this (maybe shared) virtualenv from this checkout
        pytest.skip(f"{venv} was installed from another pyproject.toml; the test must not reinstall it")
    stamps = {p.name for p in venv.glob(".installed-*")}
    env = {k: v for k, v in os.environ.items() if k != "CRYPTOPIPE_PYTHON"}
    result = find_python({**env, "CRYPTOPIPE_VENV": str(venv)})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == f"PYTHON={venv}/bin/python"
    assert {p.name for p in venv.glob(".installed-*")} >= stamps


def test_init_db_takes_every_name_from_its_caller_and_refuses_to_guess_one() -> None:
    """No default is written twice: without the settings it names each missing one and touches nothing."""
    env = {k: v for k, v in os.environ.items() if not re.fullmatch(r"(POSTGRES|REGISTRY|DB|CONNECT|POWERBI|CHART|"
                                                                    r"READER|TICK|RAW)_\w+", k)}
    result = subprocess.run(["bash", "scripts/init_db.sh"], cwd=PROJECT_ROOT, env={**env, "PGHOST": "/nonexistent"},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "needs these settings in its environment: POSTGRES_USER POSTGRES_DB REGISTRY_DB" in result.stderr
    assert "RAW_TICKS_PREMAKE_DAYS" in result.stderr and "init_db: databases" not in result.stdout
