"""The last line of scripts/test.sh: the test count, the outcome and the duration, from pytest's JUnit report.

    python -m tests.summary JUNIT_XML SECONDS PYTEST_EXIT_CODE
"""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from pathlib import Path


def summary(report: Path, seconds: int, exit_code: int) -> str:
    """`scripts/test.sh: 669 tests: 664 passed, 0 failed, 0 errors, 5 skipped in 31m 50s (pytest exit 0)`."""
    took = f"{seconds // 60}m {seconds % 60:02d}s (pytest exit {exit_code})"
    try:
        suites = ET.parse(report).getroot()
    except (FileNotFoundError, ET.ParseError) as exc:
        return f"scripts/test.sh: no test report ({exc}) after {took}"
    suite_list = [suites] if suites.tag == "testsuite" else list(suites.iter("testsuite"))
    count = {key: sum(int(s.get(key, 0)) for s in suite_list) for key in ("tests", "failures", "errors", "skipped")}
    passed = count["tests"] - count["failures"] - count["errors"] - count["skipped"]
    return (f"scripts/test.sh: {count['tests']} tests: {passed} passed, {count['failures']} failed, "
            f"{count['errors']} errors, {count['skipped']} skipped in {took}")


if __name__ == "__main__":
    print(summary(Path(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])))
