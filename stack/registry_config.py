"""Registry-wide settings the pipeline relies on: BACKWARD compatibility by default.

Apicurio's default is NONE; the stack sets the global rule through the Confluent-compatible API
(idempotent) and reads it back, so a registry that ignored the setting is caught at start-up.
"""

from __future__ import annotations

import requests

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
