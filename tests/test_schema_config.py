"""Unit tests of the schema check's inputs, no registry needed: schemas/compatibility.json and git history."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from control.schema_compat import CheckError, history, read_check_rules
from core.settings import PROJECT_ROOT

TICK = "schemas/crypto_tick.avsc"
SETTINGS = {"TICKS_TOPIC": "crypto.ticks"}


@pytest.mark.parametrize("config, message", [
    ({"default": "SIDEWAYS", "schemas": {}}, "SIDEWAYS"),
    ({"default": "BACKWARD", "schemas": {TICK: {"compatibility": "FULL"}}}, "subject"),
    ({"default": "BACKWARD", "schemas": {TICK: {"subject": "x", "compatibility": "backward"}}}, "backward"),
    ({"default": "BACKWARD", "schemas": {TICK: {"subject": "x", "level": "FULL"}}}, "level"),
    ({"default": "BACKWARD", "schemas": {"crypto_tick.avsc": {"subject": "x"}}}, "crypto_tick.avsc"),
    ({"default": "BACKWARD", "schemas": {TICK: {"subject": ""}}}, "subject"),
    ({"default": "BACKWARD", "schemas": {TICK: {"subject": "{NO_SUCH_SETTING}-value"}}}, "NO_SUCH_SETTING"),
    ({"schemas": {}}, "default"),
    ({"default": "BACKWARD", "schemas": {}, "extra": 1}, "extra"),
])
def test_a_broken_config_file_is_reported(tmp_path: Path, config: dict, message: str) -> None:
    path = tmp_path / "compatibility.json"
    path.write_text(json.dumps(config))
    with pytest.raises(CheckError, match=message):
        read_check_rules(path, SETTINGS)


def test_a_config_file_that_is_not_json_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "compatibility.json"
    path.write_text("{default: BACKWARD")
    with pytest.raises(CheckError, match="cannot read"):
        read_check_rules(path, SETTINGS)


def test_the_default_level_applies_where_a_schema_names_none(tmp_path: Path) -> None:
    path = tmp_path / "compatibility.json"
    path.write_text(json.dumps({"default": "FORWARD_TRANSITIVE", "schemas": {TICK: {"subject": "t-value"}}}))
    default, rules = read_check_rules(path, SETTINGS)
    assert default == "FORWARD_TRANSITIVE" and rules[TICK].level == "FORWARD_TRANSITIVE"


def test_the_project_config_names_the_ticks_subject() -> None:
    _, rules = read_check_rules(PROJECT_ROOT / "schemas" / "compatibility.json", SETTINGS)
    assert rules[TICK].subject == "crypto.ticks-value"
    assert rules[TICK].level == "FULL"
    assert read_check_rules(PROJECT_ROOT / "schemas" / "compatibility.json",
                      {"TICKS_TOPIC": "other"})[1][TICK].subject == "other-value"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), "-c", "user.name=t", "-c", "user.email=t@example.com", *args],
                          check=True, capture_output=True, text=True).stdout


def commit_schema(repo: Path, fields: list[str], message: str, path: str = TICK) -> None:
    schema = {"type": "record", "name": "T", "fields": [{"name": f, "type": "string"} for f in fields]}
    (repo / path).parent.mkdir(parents=True, exist_ok=True)
    (repo / path).write_text(json.dumps(schema, indent=2))
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", message)


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    path = tmp_path / "repo"
    path.mkdir()
    git(path, "init", "-q")
    return path


def test_history_is_distinct_contents_oldest_first_at_their_newest_commit(repo: Path) -> None:
    commit_schema(repo, ["a"], "v1")
    commit_schema(repo, ["a", "b"], "v2")
    commit_schema(repo, ["a"], "back to v1")
    (repo / TICK).write_text((repo / TICK).read_text().replace("  ", "    "))  # whitespace only: same schema
    git(repo, "commit", "-qam", "reformat")
    versions, _ = history(repo, TICK)
    assert [json.loads(v.text)["fields"] for v in versions] == [[{"name": "a", "type": "string"}, {"name": "b",
                                                                 "type": "string"}], [{"name": "a", "type": "string"}]]
    assert versions[-1].sha == git(repo, "rev-parse", "--short=8", "HEAD").strip()


def test_history_follows_renames(repo: Path) -> None:
    commit_schema(repo, ["a"], "v1", path="schemas/old_name.avsc")
    git(repo, "mv", "schemas/old_name.avsc", TICK)
    git(repo, "commit", "-qm", "rename")
    commit_schema(repo, ["a", "b"], "v2")
    assert len(history(repo, TICK)[0]) == 2


def test_a_file_not_in_head_is_new(repo: Path) -> None:
    commit_schema(repo, ["a"], "v1", path="schemas/other.avsc")
    (repo / TICK).write_text("{}")
    versions, note = history(repo, TICK)
    assert versions == [] and "new schema" in note


def test_a_repository_without_commits_has_only_new_schemas(repo: Path) -> None:
    versions, note = history(repo, TICK)
    assert versions == [] and "no commits yet" in note


def test_not_a_git_repository_is_an_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    with pytest.raises(CheckError, match="not a git work tree"):
        history(tmp_path, TICK)


def test_a_shallow_clone_is_an_error(repo: Path, tmp_path: Path) -> None:
    commit_schema(repo, ["a"], "v1")
    commit_schema(repo, ["a", "b"], "v2")
    clone = tmp_path / "shallow"
    subprocess.run(["git", "clone", "-q", "--depth", "1", f"file://{repo}", str(clone)], check=True)
    with pytest.raises(CheckError, match="shallow clone"):
        history(clone, TICK)


def test_a_missing_object_in_history_is_an_error(repo: Path) -> None:
    commit_schema(repo, ["a"], "v1")
    blob = git(repo, "rev-parse", f"HEAD:{TICK}").strip()
    commit_schema(repo, ["a", "b"], "v2")
    (repo / ".git" / "objects" / blob[:2] / blob[2:]).unlink()
    with pytest.raises(CheckError, match="cannot read"):
        history(repo, TICK)
