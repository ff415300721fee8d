"""The schema compatibility check, against the stack's real registry and real git repositories.

Each test builds a small git repository whose history holds version 1 of the tick schema, changes the
working tree the way a pull request would, and runs the check. Exit codes: 0 compatible, 1 incompatible,
2 could not check.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from control.schema_compat import main
from core.settings import PROJECT_ROOT
from tests.conftest import StackHandle

pytestmark = pytest.mark.stack

TICK = "schemas/crypto_tick.avsc"
V1 = json.loads((PROJECT_ROOT / TICK).read_text())


def git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), "-c", "user.name=test", "-c", "user.email=test@example.com", *args],
                   check=True, capture_output=True)


def make_repo(tmp_path: Path, level: str = "FULL") -> Path:
    """A repository with v1 of the tick schema committed, under its own subject and level."""
    repo = tmp_path / "repo"
    (repo / "schemas").mkdir(parents=True)
    (repo / TICK).write_text(json.dumps(V1, indent=2))
    config = {"default": "BACKWARD", "schemas": {TICK: {"subject": f"compat-test-{uuid.uuid4().hex[:8]}-value",
                                                         "compatibility": level}}}
    (repo / "schemas" / "compatibility.json").write_text(json.dumps(config))
    git(repo, "init", "-q")
    git(repo, "add", ".")
    git(repo, "commit", "-qm", "v1")
    return repo


def change(repo: Path, edit: callable) -> None:
    schema = json.loads((repo / TICK).read_text())
    edit(schema["fields"])
    (repo / TICK).write_text(json.dumps(schema, indent=2))


def field(fields: list[dict], name: str) -> dict:
    return next(f for f in fields if f["name"] == name)


def check(stack: StackHandle, repo: Path, capsys: pytest.CaptureFixture, *extra: str) -> tuple[int, str]:
    code = main(["--repo", str(repo), "--registry", stack.registry_url, *extra])
    captured = capsys.readouterr()
    return code, captured.out + captured.err


def test_adding_a_field_with_a_default_passes(stack: StackHandle, tmp_path: Path, capsys) -> None:
    repo = make_repo(tmp_path)
    change(repo, lambda fields: fields.append({"name": "exchange", "type": ["null", "string"], "default": None}))
    code, out = check(stack, repo, capsys)
    assert code == 0, out
    assert "FULL compatible with" in out and "latest of 1 earlier distinct version(s)" in out


def test_removing_a_field_without_a_default_fails_with_the_registry_reason(stack: StackHandle, tmp_path: Path,
                                                                           capsys) -> None:
    repo = make_repo(tmp_path)
    change(repo, lambda fields: fields.remove(field(fields, "producer_id")))
    code, out = check(stack, repo, capsys)
    assert code == 1, out
    assert "FAIL" in out and "producer_id" in out


def test_changing_a_type_fails_with_the_registry_reason(stack: StackHandle, tmp_path: Path, capsys) -> None:
    repo = make_repo(tmp_path)
    change(repo, lambda fields: field(fields, "price").update(type="string"))
    code, out = check(stack, repo, capsys)
    assert code == 1, out
    assert "reader type: STRING not compatible with writer type: DOUBLE" in out


def test_renaming_a_field_without_an_alias_fails(stack: StackHandle, tmp_path: Path, capsys) -> None:
    repo = make_repo(tmp_path)
    change(repo, lambda fields: field(fields, "symbol").update(name="ticker"))
    code, out = check(stack, repo, capsys)
    assert code == 1, out
    assert "FAIL" in out and ("ticker" in out or "symbol" in out)


def test_a_non_transitive_level_compares_with_the_latest_version_only(stack: StackHandle, tmp_path: Path,
                                                                    capsys) -> None:
    """v2 gives the new field a default, the working tree drops it: fine for v2's data (BACKWARD),
    not for v1's, which lacks the field: BACKWARD passes, BACKWARD_TRANSITIVE fails."""
    results = {}
    for level in ("BACKWARD", "BACKWARD_TRANSITIVE"):
        repo = make_repo(tmp_path / level, level=level)
        change(repo, lambda fields: fields.append({"name": "exchange", "type": "string", "default": "x"}))
        git(repo, "commit", "-qam", "v2")
        change(repo, lambda fields: field(fields, "exchange").pop("default"))
        results[level] = check(stack, repo, capsys)
    assert results["BACKWARD"][0] == 0, results["BACKWARD"][1]
    assert "latest of 2 earlier distinct version(s)" in results["BACKWARD"][1]
    assert results["BACKWARD_TRANSITIVE"][0] == 1, results["BACKWARD_TRANSITIVE"][1]
    assert "all 2 earlier distinct versions" in results["BACKWARD_TRANSITIVE"][1]
    assert "exchange" in results["BACKWARD_TRANSITIVE"][1]


def test_the_committed_working_tree_is_compared_with_the_version_before_it(stack: StackHandle, tmp_path: Path,
                                                                          capsys) -> None:
    """CI checks a clean checkout: the working tree equals HEAD, and must still be compared with v1."""
    repo = make_repo(tmp_path)
    change(repo, lambda fields: field(fields, "price").update(type="string"))
    git(repo, "commit", "-qam", "v2 breaks price")
    code, out = check(stack, repo, capsys)
    assert code == 1, out
    assert "DOUBLE" in out


def test_adding_a_field_without_a_default_fails_under_backward(stack: StackHandle, tmp_path: Path, capsys) -> None:
    repo = make_repo(tmp_path, level="BACKWARD")
    change(repo, lambda fields: fields.append({"name": "exchange", "type": "string"}))
    code, out = check(stack, repo, capsys)
    assert code == 1, out
    assert "registry: " in out and "exchange" in out


def test_the_level_comes_from_the_config_file(stack: StackHandle, tmp_path: Path, capsys) -> None:
    """Removing a field: BACKWARD passes (new readers ignore it), FORWARD and FULL fail (old readers need
    it); adding a required field: FORWARD passes, BACKWARD fails; NONE lets anything through."""
    def drop(fields: list[dict]) -> None:
        fields.remove(field(fields, "producer_id"))

    def add_required(fields: list[dict]) -> None:
        fields.append({"name": "exchange", "type": "string"})

    def retype(fields: list[dict]) -> None:
        field(fields, "price").update(type="string")

    expected = {("BACKWARD", drop): 0, ("FORWARD", drop): 1, ("FULL", drop): 1,
                ("FORWARD", add_required): 0, ("BACKWARD", add_required): 1, ("NONE", retype): 0}
    for n, ((level, edit), code) in enumerate(expected.items()):
        repo = make_repo(tmp_path / str(n), level=level)
        change(repo, edit)
        got, out = check(stack, repo, capsys)
        assert got == code, f"{level} {edit.__name__}: {out}"
        assert f"{level} compatible" in out


def test_a_new_schema_file_has_nothing_to_compare_and_says_so(stack: StackHandle, tmp_path: Path, capsys) -> None:
    repo = make_repo(tmp_path)
    (repo / "schemas" / "other.avsc").write_text(json.dumps({"type": "record", "name": "O", "fields": []}))
    config = json.loads((repo / "schemas" / "compatibility.json").read_text())
    config["schemas"]["schemas/other.avsc"] = {"subject": "other-value"}
    (repo / "schemas" / "compatibility.json").write_text(json.dumps(config))
    code, out = check(stack, repo, capsys)
    assert code == 0, out
    assert "new schema (not in HEAD): nothing to compare" in out


def test_unreadable_history_is_an_error_not_a_pass(stack: StackHandle, tmp_path: Path, capsys) -> None:
    repo = make_repo(tmp_path)
    change(repo, lambda fields: field(fields, "price").update(type="string"))
    clone = tmp_path / "shallow"
    git(repo, "commit", "-qam", "v2")
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(clone)], check=True)
    code, out = check(stack, clone, capsys)
    assert code == 2, out
    assert "shallow clone" in out


def test_a_history_with_missing_objects_is_an_error(stack: StackHandle, tmp_path: Path, capsys) -> None:
    repo = make_repo(tmp_path)
    blob = subprocess.run(["git", "-C", str(repo), "rev-parse", f"HEAD:{TICK}"], capture_output=True, text=True,
                          check=True).stdout.strip()
    change(repo, lambda fields: fields.append({"name": "exchange", "type": ["null", "string"], "default": None}))
    git(repo, "commit", "-qam", "v2")
    (repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    code, out = check(stack, repo, capsys)
    assert code == 2, out
    assert "cannot read" in out


def test_no_scratch_subject_is_left_behind(stack: StackHandle, tmp_path: Path, capsys) -> None:
    import requests
    repo = make_repo(tmp_path)
    change(repo, lambda fields: field(fields, "price").update(type="string"))
    assert check(stack, repo, capsys)[0] == 1
    subjects = requests.get(f"{stack.registry_url}/subjects", timeout=10).json()
    assert not [s for s in subjects if s.startswith("compat-check.")]


def test_the_registry_says_compatible_for_an_unknown_subject(stack: StackHandle) -> None:
    """The trap the check guards against (see test below)."""
    import requests
    answer = requests.post(f"{stack.registry_url}/compatibility/subjects/nobody-{uuid.uuid4().hex}/versions/latest",
                           json={"schema": json.dumps(V1)}, timeout=10)
    assert answer.json().get("is_compatible") is True


def test_live_check_of_a_missing_subject_is_an_error(stack: StackHandle, tmp_path: Path, capsys) -> None:
    repo = make_repo(tmp_path)
    code, out = check(stack, repo, capsys, "--live")
    assert code == 2
    assert "does not exist" in out


def test_live_check_against_the_latest_registered_version(stack: StackHandle, tmp_path: Path, capsys) -> None:
    import requests
    repo = make_repo(tmp_path)
    subject = json.loads((repo / "schemas" / "compatibility.json").read_text())["schemas"][TICK]["subject"]
    admin = stack.settings.registry_auth("admin")  # the registry takes writes with credentials only
    requests.put(f"{stack.registry_url}/config/{subject}", json={"compatibility": "FULL"}, auth=admin, timeout=10)
    registered = requests.post(f"{stack.registry_url}/subjects/{subject}/versions",
                               json={"schema": json.dumps(V1)}, auth=admin, timeout=10)
    assert registered.ok, registered.text
    change(repo, lambda fields: field(fields, "price").update(type="string"))
    code, out = check(stack, repo, capsys, "--live")
    assert code == 1, out
    assert "live version" in out and "DOUBLE" in out


def test_the_project_schemas_pass_the_check_script(stack: StackHandle) -> None:
    """What CI enforces on every submission: this repository's schemas against their own history."""
    result = subprocess.run(["bash", "scripts/check_schema_compat.sh", "--registry", stack.registry_url],
                            cwd=PROJECT_ROOT, env={**stack.env(), "PYTHON": sys.executable},
                            capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK    {stack.settings['TICKS_TOPIC']}-value (schemas/crypto_tick.avsc)" in result.stdout
