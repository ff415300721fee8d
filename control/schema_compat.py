"""Schema compatibility check: the working tree's Avro schemas against their git history, asked of a real registry.

For every schema file in schemas/ (or the files given), the distinct committed versions of the file
(`git log --follow`, identical contents once, at their newest commit) other than the working tree's
own content are registered, oldest first, under a throwaway subject (level NONE while seeding); the
subject then gets the file's level from schemas/compatibility.json and the registry is asked whether
the working-tree schema is compatible: with the latest of those versions, or with all of them for a
*_TRANSITIVE level, exactly as the registry would decide on registration. The throwaway subject is
deleted afterwards (soft, then permanent). A file not in HEAD's tree is a new schema: nothing to
compare, reported as such. A shallow clone is an error: its history is incomplete.

`--live` instead asks a running registry whether the working tree is compatible with the latest
version of the real subject (e.g. crypto.ticks-value), under that subject's level on that registry.

The check fails (exit 2) rather than passes when there is nothing to compare against that should
exist: a tracked schema whose history cannot be read, a subject the registry does not know (a
Confluent-compatible registry answers "compatible" for an unknown subject), or a registry error.
Exit codes: 0 compatible, 1 incompatible, 2 could not check.

The registry is asked through core.registry (the project's one client), and the levels come from the
same reader of schemas/compatibility.json that `stack up` and compose's one-shot apply to the registry.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from core import registry
from core.registry import SchemaRule
from core.settings import PROJECT_ROOT, Settings, SettingsError

OK, INCOMPATIBLE, ERROR = 0, 1, 2


class CheckError(Exception):
    """The check could not be made: that is a failure, never a pass."""


def read_check_rules(config_file: Path, settings_env: dict[str, str]) -> tuple[str, dict[str, SchemaRule]]:
    """The rule file (core.registry reads it, for this check and for the registry alike)."""
    try:
        rules = registry.load_rules(settings_env, config_file)
    except registry.RulesError as exc:
        raise CheckError(str(exc)) from exc
    return rules.default, rules.schemas


# -- git history ------------------------------------------------------------------------------------

def git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True, check=False)


def canonical(text: str) -> str:
    return json.dumps(json.loads(text), sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Version:
    """One distinct content of a schema file in git history."""
    sha: str  # short SHA of the newest commit holding this content
    text: str


def history(repo: Path, path: str) -> tuple[list[Version], str]:
    """Distinct committed versions of `path`, oldest first, each at its newest commit, and a note.
    An empty list means a new file (not in HEAD's tree); a tracked file without readable history raises."""
    if git(repo, "rev-parse", "--is-inside-work-tree").stdout.strip() != "true":
        raise CheckError(f"{repo} is not a git work tree: the history of {path} cannot be read")
    if git(repo, "rev-parse", "--verify", "-q", "HEAD").returncode != 0:
        if git(repo, "symbolic-ref", "-q", "HEAD").returncode == 0 and not git(repo, "rev-list", "-n1", "--all").stdout:
            return [], "no commits yet: new schema, nothing to compare"
        raise CheckError(f"HEAD of {repo} cannot be read: the history of {path} cannot be read")
    tree = git(repo, "ls-tree", "--name-only", "HEAD", "--", path)
    if tree.returncode != 0:
        raise CheckError(f"HEAD's tree in {repo} cannot be read: {tree.stderr.strip()}")
    if not tree.stdout.strip():
        tracked_before = git(repo, "log", "--format=%h", "-1", "--", path).stdout.strip()
        if tracked_before:
            return [], f"deleted after {tracked_before}, new again (not in HEAD): nothing to compare"
        return [], "new schema (not in HEAD): nothing to compare"
    if git(repo, "rev-parse", "--is-shallow-repository").stdout.strip() == "true":
        raise CheckError(f"{repo} is a shallow clone: the history of {path} is incomplete "
                         "(git fetch --unshallow; in CI check out with full history, e.g. fetch-depth: 0)")
    # --follow with --name-status: each commit with the name the file had then (renames included)
    log = git(repo, "log", "--follow", "--name-status", "--format=commit %H", "--", path)
    entries: list[tuple[str, str, str]] = []  # (sha, status, name at that commit), newest first
    sha = ""
    for line in log.stdout.splitlines():
        if line.startswith("commit "):
            sha = line.split()[1]
        elif line.strip() and sha:
            fields = line.split("\t")
            entries.append((sha, fields[0], fields[-1]))
    if log.returncode != 0 or not entries:
        raise CheckError(f"{path} is in HEAD but its history cannot be read: {log.stderr.strip() or 'no commits'}")
    newest_first: list[Version] = []
    seen: set[str] = set()
    for sha, status, name in entries:
        if status.startswith("D"):
            continue
        blob = git(repo, "show", f"{sha}:{name}")
        if blob.returncode != 0:
            raise CheckError(f"cannot read {name} at {sha[:8]}: {blob.stderr.strip()}")
        try:
            key = canonical(blob.stdout)
        except json.JSONDecodeError as exc:
            raise CheckError(f"{name} at {sha[:8]} is not valid JSON: {exc}") from exc
        if key not in seen:  # identical contents: keep the newest commit, so the order ends with HEAD's
            seen.add(key)
            newest_first.append(Version(sha[:8], blob.stdout))
    if not newest_first:
        raise CheckError(f"{path} is in HEAD but no version of it could be read from git")
    return newest_first[::-1], ""


# -- registry -----------------------------------------------------------------------------------------

class CheckRegistry:
    """The check's view of the registry: core.registry's client, with every failure a CheckError."""

    def __init__(self, url: str, auth: tuple[str, str] | None = None) -> None:
        """`auth`: the registry's admin (it registers and deletes throwaway subjects and sets their levels)."""
        self.url = url.rstrip("/")
        self.auth = auth
        self.client = registry.registry_client(self.url, auth)

    def versions(self, subject: str) -> list[int] | None:
        with _could_not_check():
            return registry.versions(self.client, subject)

    def set_level(self, subject: str, level: str) -> None:
        with _could_not_check():
            registry.set_level(self.client, level, subject)

    def level(self, subject: str) -> str:
        with _could_not_check():
            return registry.level(self.client, subject)

    def register(self, subject: str, schema: str) -> int:
        """The schema's id; an id seen before means the registry holds this content already (it compares
        canonical forms: whitespace and doc changes are the same schema to it)."""
        with _could_not_check():
            return registry.register(self.client, subject, schema)

    def check(self, subject: str, version: int | str | None, schema: str) -> tuple[bool, list[str]]:
        """Against one version ("latest" or a number), or None: against all versions (transitive levels)."""
        with _could_not_check():
            return registry.is_compatible(self.client, subject, schema, version), []

    def reasons(self, subject: str, schema: str) -> list[str]:
        return registry.reasons(self.url, subject, schema, self.auth)

    def delete(self, subject: str) -> None:
        with _could_not_check():
            registry.delete_subject(self.client, subject)


@contextlib.contextmanager
def _could_not_check() -> Iterator[None]:
    try:
        yield
    except registry.RegistryError as exc:
        raise CheckError(str(exc)) from exc


# -- the two checks --------------------------------------------------------------------------------------

def check_history(target: CheckRegistry, repo: Path, rule: SchemaRule, out: list[str]) -> int:
    versions, note = history(repo, rule.path)
    if not versions:
        out.append(f"OK    {rule.subject} ({rule.path}): {note}")
        return OK
    working = (repo / rule.path).read_text()
    try:
        working_key = canonical(working)
    except json.JSONDecodeError as exc:
        raise CheckError(f"{rule.path} in the working tree is not valid JSON: {exc}") from exc
    earlier = [v for v in versions if canonical(v.text) != working_key] or versions  # unchanged: compare with itself
    transitive = rule.level.endswith("_TRANSITIVE")
    scratch = f"compat-check.{uuid.uuid4().hex[:12]}.{rule.subject}"
    try:
        target.set_level(scratch, "NONE")  # history itself may hold breaking steps: seed without rules
        ids: list[int] = []
        for version in earlier:
            schema_id = target.register(scratch, version.text)
            if schema_id not in ids:
                ids.append(schema_id)
        registered = target.versions(scratch)
        if registered is None or len(registered) != len(ids):  # it must hold exactly what we compare against
            raise CheckError(f"registry holds versions {registered} of {scratch}, expected {len(ids)}")
        target.set_level(scratch, rule.level)
        compatible, messages = target.check(scratch, None if transitive else "latest", working)
        if not compatible and not messages:
            messages = target.reasons(scratch, working)
    finally:
        target.delete(scratch)
    against = [v.sha for v in earlier] if transitive else [earlier[-1].sha]
    compared = (f"{', '.join(against)} (all {len(earlier)} earlier distinct versions)" if transitive
                else f"{against[0]} (latest of {len(earlier)} earlier distinct version(s): "
                     f"{', '.join(v.sha for v in earlier)})")
    if compatible:
        out.append(f"OK    {rule.subject} ({rule.path}): working tree is {rule.level} compatible with {compared}")
        return OK
    out.append(f"FAIL  {rule.subject} ({rule.path}): working tree is not {rule.level} compatible with {compared}")
    out.extend(f"        registry: {m}" for m in messages or ["(the registry gave no reason)"])
    return INCOMPATIBLE


def check_live(target: CheckRegistry, repo: Path, rule: SchemaRule, out: list[str]) -> int:
    versions = target.versions(rule.subject)
    if not versions:
        raise CheckError(f"subject {rule.subject} does not exist on {target.url}: nothing to check against "
                         "(a registry answers 'compatible' for unknown subjects, so this is an error)")
    level = target.level(rule.subject)
    if level != rule.level:
        out.append(f"NOTE  {rule.subject}: the registry enforces {level}, {rule.path} is configured {rule.level}")
    transitive = level.endswith("_TRANSITIVE")
    compatible, messages = target.check(rule.subject, None if transitive else "latest",
                                          (repo / rule.path).read_text())
    if compatible:
        out.append(f"OK    {rule.subject} ({rule.path}): working tree is {level} compatible with live version "
                   f"{max(versions)} on {target.url}")
        return OK
    out.append(f"FAIL  {rule.subject} ({rule.path}): working tree is not {level} compatible with live version "
               f"{max(versions)} on {target.url}")
    messages = messages or target.reasons(rule.subject, (repo / rule.path).read_text())
    out.extend(f"        {m}" for m in messages or ["(the registry gave no reason)"])
    return INCOMPATIBLE


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.load()
    except SettingsError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 2
    repo = Path(args.repo).resolve()
    config_file = repo / args.config
    try:
        _, rules = read_check_rules(config_file, settings.env)
        paths = args.schemas or sorted(str(p.relative_to(repo)) for p in (repo / "schemas").glob("*.avsc"))
        missing = [p for p in paths if p not in rules]
        if missing:
            raise CheckError(f"no entry in {args.config} for {', '.join(missing)}: add its subject (and level)")
        if not paths:
            raise CheckError(f"no schemas found under {repo / 'schemas'}")
        target = CheckRegistry(args.registry or settings.ccompat_url, settings.registry_auth("admin"))
        worst = OK
        for path in paths:
            out: list[str] = []
            try:
                worst = max(worst, (check_live if args.live else check_history)(target, repo, rules[path], out))
            finally:
                print("\n".join(out), flush=True)
        return worst
    except CheckError as exc:
        print(f"ERROR {exc}", file=sys.stderr)
        return ERROR


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/check_schema_compat.sh", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("schemas", nargs="*", help="schema files relative to the repository (default: schemas/*.avsc)")
    parser.add_argument("--registry", help="Confluent-compatible registry URL (default: $SCHEMA_REGISTRY_URL, "
                                           "else the stack's: Settings.ccompat_url)")
    parser.add_argument("--live", action="store_true",
                        help="check against the latest version of the real subject on --registry, not git history")
    parser.add_argument("--repo", default=str(PROJECT_ROOT), help="git repository to read (default: this one)")
    parser.add_argument("--config", default="schemas/compatibility.json",
                        help="per-schema subject and level, relative to --repo (default: %(default)s)")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
