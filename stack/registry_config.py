"""Registry settings the pipeline relies on: BACKWARD by default, per-subject levels from schemas/.

Apicurio's default is NONE; the stack sets the global rule through the Confluent-compatible API
(idempotent) and reads it back, so a registry that ignored the setting is caught at start-up.
"""

from __future__ import annotations

import requests

from control.settings import PROJECT_ROOT
from stack.process import StackError


def ensure_global_compatibility(ccompat_url: str, level: str = "BACKWARD") -> str:
    current = requests.get(f"{ccompat_url}/config", timeout=10)
    if current.ok and current.json().get("compatibilityLevel") == level:
        return level
    response = requests.put(f"{ccompat_url}/config", json={"compatibility": level}, timeout=10)
    if not response.ok:
        raise StackError(f"setting global compatibility {level} failed: HTTP {response.status_code} {response.text}")
    check = requests.get(f"{ccompat_url}/config", timeout=10).json().get("compatibilityLevel")
    if check != level:
        raise StackError(f"registry reports global compatibility {check!r} after setting {level}")
    return level


def ensure_subject_levels(ccompat_url: str, settings_env: dict[str, str]) -> dict[str, str]:
    """Apply the per-subject levels of schemas/compatibility.json, the file CI checks schemas with,
    so the live registry enforces exactly what the pull-request check enforced."""
    from stack.schema_compat import CheckError, load_rules  # the one reader of that file

    try:
        _, rules = load_rules(PROJECT_ROOT / "schemas" / "compatibility.json", settings_env)
    except CheckError as exc:
        raise StackError(str(exc)) from exc
    applied = {}
    for rule in rules.values():
        response = requests.put(f"{ccompat_url}/config/{rule.subject}", json={"compatibility": rule.level}, timeout=10)
        if not response.ok:
            raise StackError(f"setting {rule.level} on {rule.subject} failed: "
                             f"HTTP {response.status_code} {response.text}")
        applied[rule.subject] = rule.level
    return applied
