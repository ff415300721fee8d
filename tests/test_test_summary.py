"""scripts/test.sh's last line (tests/summary.py): the count and outcome come from pytest's JUnit report, the
duration from the script, so the README need not write either by hand."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.summary import summary


def test_the_line_counts_what_the_junit_report_counts(tmp_path: Path) -> None:
    report = tmp_path / "junit.xml"
    report.write_text('<?xml version="1.0"?><testsuites><testsuite name="pytest" tests="12" failures="2" '
                      'errors="1" skipped="3" time="5.0"></testsuite></testsuites>')
    assert summary(report, 1910, 1) == ("scripts/test.sh: 12 tests: 6 passed, 2 failed, 1 errors, 3 skipped "
                                        "in 31m 50s (pytest exit 1)")


def test_a_missing_report_says_so_instead_of_a_count(tmp_path: Path) -> None:
    line = summary(tmp_path / "absent.xml", 7, 4)
    assert line.startswith("scripts/test.sh: no test report") and line.endswith("0m 07s (pytest exit 4)")


def test_pytest_writes_the_report_the_line_is_made_of(tmp_path: Path) -> None:
    """A real pytest run of two tests, one failing: the line says 2 tests, 1 passed, 1 failed."""
    (tmp_path / "test_two.py").write_text("def test_ok():\n    pass\n\ndef test_bad():\n    assert False\n")
    report = tmp_path / "junit.xml"
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", f"--junitxml={report}",
                          "--rootdir", str(tmp_path), str(tmp_path / "test_two.py")],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 1, run.stdout
    assert summary(report, 3, run.returncode) == ("scripts/test.sh: 2 tests: 1 passed, 1 failed, 0 errors, "
                                                  "0 skipped in 0m 03s (pytest exit 1)")

