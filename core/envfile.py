"""The one dotenv parser (standard library only): `.env` and the native stack's secrets file.

Docker compose's format, strictly: `KEY=VALUE` (an optional `export ` before it), blank lines and `#`
comments. A bare value ends at ` #` (an inline comment) and loses surrounding spaces; a 'single-quoted'
value is taken as written except `\\'` and `\\\\`; a "double-quoted" one also knows `\\n`, `\\t` and `\\r`.
No interpolation. Any other line is an error naming the file and the line: nothing is skipped silently.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

_LINE = re.compile(r"^\s*(?:export\s+)?(?P<key>[A-Za-z_][A-Za-z0-9_]*)\s*=(?P<rest>.*?)\s*$")
_SINGLE = re.compile(r"^'(?P<body>(?:\\'|[^'])*)'\s*(?:#.*)?$")
_DOUBLE = re.compile(r'^"(?P<body>(?:\\"|[^"])*)"\s*(?:#.*)?$')
_DOUBLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


class EnvFileError(ValueError):
    """A line of a dotenv file that is not a setting; the message names the file and the line."""


@dataclass(frozen=True)
class Line:
    key: str
    value: str
    number: int  # 1-based line number in its file


def parse_env(text: str, source: Path | str = "<text>") -> tuple[list[Line], list[tuple[int, str]]]:
    """Every KEY=VALUE line of `text` in order, and (line number, "file:line: why") per line that is not one."""
    lines, bad = [], []
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue
        match = _LINE.match(raw)
        value = _value(match.group("rest")) if match else None
        if match is None or value is None:
            bad.append((number, f"{source}:{number}: not a KEY=VALUE line: {stripped!r}"))
        else:
            lines.append(Line(match.group("key"), value, number))
    return lines, bad


def parse_env_text(text: str, source: Path | str = "<text>") -> list[Line]:
    """The KEY=VALUE lines of `text`; any line that is not one raises EnvFileError listing them all."""
    lines, bad = parse_env(text, source)
    if bad:
        raise EnvFileError("\n".join(message for _, message in bad))
    return lines


def _value(rest: str) -> str | None:
    """The value after `=`, unquoted; None when its quotes do not close or text follows them."""
    quoted = rest.lstrip()
    if quoted.startswith("'"):
        single = _SINGLE.match(quoted)
        return re.sub(r"\\([\\'])", r"\1", single.group("body")) if single else None
    if quoted.startswith('"'):
        double = _DOUBLE.match(quoted)
        if double is None:
            return None
        return re.sub(r"\\(.)", lambda m: _DOUBLE_ESCAPES.get(m.group(1), m.group(0)), double.group("body"))
    return re.sub(r"\s+#.*$", "", rest).strip()  # `A=#x` is "#x"; `A= #x` is empty
