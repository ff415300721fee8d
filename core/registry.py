"""The schema registry as every part of the project talks to it, and the compatibility rules it enforces.

One client: confluent-kafka's SchemaRegistryClient on the registry's Confluent-compatible API (the
producer's serializer, `stack up`, compose's one-shot, the schema check and the tests all get it from
registry_client()). One rule file: schemas/compatibility.json, whose "default" is the registry's global
level and whose per-schema entries name each subject and its level. apply_levels() sets both and reads
them back, so a registry that ignored a setting is caught; it is what `python -m control levels` (and
`setup`, compose's one-shot) and `scripts/stack.sh up` run, so both forms of the stack enforce exactly
what the pull-request check (control/schema_compat.py) checks against.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import jsonschema
import requests
from confluent_kafka.schema_registry import Schema, SchemaRegistryClient
from confluent_kafka.schema_registry.error import SchemaRegistryError

from core.settings import PROJECT_ROOT, registry_api_url

RULES_FILE = PROJECT_ROOT / "schemas" / "compatibility.json"
REQUEST_TIMEOUT_S = 30
LEVELS = ["BACKWARD", "BACKWARD_TRANSITIVE", "FORWARD", "FORWARD_TRANSITIVE", "FULL", "FULL_TRANSITIVE", "NONE"]
RULES_SCHEMA = {
    "type": "object",
    "required": ["default", "schemas"],
    "properties": {
        "$comment": {"type": "string"},
        "default": {"enum": LEVELS},
        "schemas": {
            "type": "object",
            "propertyNames": {"pattern": r"^schemas/.+\.avsc$"},
            "additionalProperties": {
                "type": "object",
                "required": ["subject"],
                "properties": {"subject": {"type": "string", "minLength": 1}, "compatibility": {"enum": LEVELS},
                               "why": {"type": "string"}},
                "additionalProperties": False,
            },
        },
    },
    "additionalProperties": False,
}
GLOBAL = "(global)"  # the key apply_levels() reports the registry-wide level under


class RegistryError(RuntimeError):
    """The registry refused or did not answer a call; the message names the call, the status and the reason."""


class RulesError(RuntimeError):
    """schemas/compatibility.json cannot be read or does not follow its format."""


def registry_client(url: str, auth: tuple[str, str] | None = None,
                    timeout_s: float = REQUEST_TIMEOUT_S) -> SchemaRegistryClient:
    """THE registry client, as `auth` (Settings.registry_auth(identity); None: anonymous, reads only). Its
    requests time out: httpx's default here is to wait forever on a silent registry."""
    config: dict[str, object] = {"url": url, "timeout": timeout_s}
    if auth is not None:
        config["basic.auth.user.info"] = f"{auth[0]}:{auth[1]}"
    return SchemaRegistryClient(config)


def client_url(client: SchemaRegistryClient) -> str:
    rest = getattr(client, "_rest_client", None)
    urls = getattr(rest, "base_urls", None)
    return str(urls[0]) if urls else "?"


# -- the rules ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SchemaRule:
    path: str  # relative to the repository root
    subject: str
    level: str


@dataclass(frozen=True)
class Rules:
    default: str  # the registry's global level, and the level of every schema that names none
    schemas: dict[str, SchemaRule]  # by path

    def levels(self) -> dict[str, str]:
        """What the registry must say: the global level, then each subject's."""
        return {GLOBAL: self.default, **{rule.subject: rule.level for rule in self.schemas.values()}}


def load_rules(settings_env: Mapping[str, str], rules_file: Path = RULES_FILE) -> Rules:
    """The rule file, validated; subjects with their {SETTING} placeholders filled from the settings."""
    try:
        config = json.loads(rules_file.read_text())
        jsonschema.validate(config, RULES_SCHEMA)
    except (OSError, json.JSONDecodeError) as exc:
        raise RulesError(f"cannot read {rules_file}: {exc}") from exc
    except jsonschema.ValidationError as exc:
        raise RulesError(f"{rules_file}: {exc.message} at {'/'.join(map(str, exc.absolute_path)) or 'top'}") from exc
    schemas = {}
    for path, entry in config["schemas"].items():
        try:
            subject = entry["subject"].format(**settings_env)
        except KeyError as exc:
            raise RulesError(f"{rules_file}: subject of {path} names unknown setting {exc}") from exc
        schemas[path] = SchemaRule(path, subject, entry.get("compatibility", config["default"]))
    return Rules(config["default"], schemas)


# -- calls, with errors that say what failed -----------------------------------------------------------

def _call(client: SchemaRegistryClient, what: str, fn, *args, **kwargs):  # noqa: ANN001, ANN202 - a thin wrapper
    try:
        return fn(*args, **kwargs)
    except SchemaRegistryError as exc:
        raise RegistryError(f"registry {client_url(client)}: {what} failed: HTTP {exc.http_status_code} "
                            f"(code {exc.error_code}) {exc.error_message}") from exc
    except Exception as exc:  # noqa: BLE001 - httpx's connection errors and timeouts: the registry did not answer
        raise RegistryError(f"registry {client_url(client)} unreachable: {what}: {type(exc).__name__}: {exc}") from exc


def _not_found(exc: RegistryError) -> bool:
    cause = exc.__cause__
    return isinstance(cause, SchemaRegistryError) and cause.http_status_code == 404


def versions(client: SchemaRegistryClient, subject: str) -> list[int] | None:
    """The subject's version numbers; None when the registry does not know the subject."""
    try:
        return _call(client, f"listing versions of {subject}", client.get_versions, subject)
    except RegistryError as exc:
        if _not_found(exc):
            return None
        raise


def level(client: SchemaRegistryClient, subject: str | None = None) -> str:
    """The level the registry enforces for `subject` (its own, else the global one), or the global level."""
    if subject is not None:
        try:
            return _call(client, f"reading the level of {subject}", client.get_compatibility, subject)
        except RegistryError as exc:
            if not _not_found(exc):
                raise
    return _call(client, "reading the global level", client.get_compatibility)


def set_level(client: SchemaRegistryClient, new_level: str, subject: str | None = None) -> None:
    """Set a subject's level (or the global one, subject None) and read it back."""
    where = subject or "the registry (global)"
    _call(client, f"setting {new_level} on {where}", client.set_compatibility, subject, new_level)
    now = _call(client, f"reading the level of {where}", client.get_compatibility, subject)
    if now != new_level:
        raise RegistryError(f"registry {client_url(client)} reports level {now!r} for {where} "
                            f"after setting {new_level}")


def apply_levels(client: SchemaRegistryClient, rules: Rules) -> dict[str, str]:
    """Make the registry enforce the rules: the global level, then each subject's (idempotent). Returns them."""
    applied = {}
    for subject, wanted in rules.levels().items():
        target = None if subject == GLOBAL else subject
        if level(client, target) != wanted:
            set_level(client, wanted, target)
        applied[subject] = wanted
    return applied


def register(client: SchemaRegistryClient, subject: str, schema: str) -> int:
    """The schema's id under `subject` (registered now, or the id it already has there)."""
    return _call(client, f"registering a version of {subject}", client.register_schema, subject, Schema(schema, "AVRO"))


def is_compatible(client: SchemaRegistryClient, subject: str, schema: str, version: int | str | None) -> bool:
    """Against one version ("latest" or a number), or None: against all versions (transitive levels)."""
    if version is None:
        return _call(client, f"checking against all versions of {subject}", client.test_compatibility_all_versions,
                     subject, Schema(schema, "AVRO"))
    return _call(client, f"checking against {subject} version {version}", client.test_compatibility,
                 subject, Schema(schema, "AVRO"), version)


def delete_subject(client: SchemaRegistryClient, subject: str) -> None:
    """Soft, then permanent delete; raises if the subject is still there afterwards."""
    for permanent in (False, True):
        try:
            _call(client, f"deleting {subject}", client.delete_subject, subject, permanent)
        except RegistryError as exc:
            if not _not_found(exc):
                raise
    if versions(client, subject) is not None:
        raise RegistryError(f"registry {client_url(client)}: subject {subject} is still there after deleting it")


def reasons(ccompat_url: str, subject: str, schema: str, auth: tuple[str, str] | None = None) -> list[str]:
    """Why `schema` may not be added to `subject` under its rules. Apicurio's Confluent-compatible API answers
    is_compatible without messages (it ignores verbose=true); its native API's dry run names every
    incompatible difference. Empty when the registry is not Apicurio or gives no reason."""
    native = registry_api_url(ccompat_url, "v3")
    if native is None:
        return []
    try:
        response = requests.post(f"{native}/groups/default/artifacts/{subject}/versions?dryRun=true", timeout=30,
                                 json={"content": {"content": schema, "contentType": "application/json"}},
                                 auth=auth)
    except requests.RequestException:
        return []
    if response.ok:
        return []
    try:
        causes = response.json().get("causes") or []
    except ValueError:
        return [response.text[:500]]
    return [f"{c.get('description')} at {c.get('context')}" for c in causes] or [response.text[:500]]
