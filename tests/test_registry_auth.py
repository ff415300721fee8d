"""Registry writes need credentials (docs/registry-auth.md): only the producer's and the admin's identities may
register schemas or change levels; reads stay open (the Connect converter reads anonymously by content id).

On the real stack, against the three APIs the registry serves (Confluent-compatible v7, Apicurio v2 and v3)."""

from __future__ import annotations

import json
import uuid

import pytest
import requests

from core import registry
from core.settings import REGISTRY_USERS
from tests.conftest import StackHandle
from tests.support import TickProducer, new_symbol, tick, wait_for_rows

pytestmark = pytest.mark.stack

SCHEMA = json.dumps({"type": "record", "name": "AuthProbe", "fields": [{"name": "a", "type": "string"}]})
CCOMPAT = {"Content-Type": "application/vnd.schemaregistry.v1+json"}


def subject() -> str:
    return f"auth-probe.{uuid.uuid4().hex[:12]}"


def base(stack: StackHandle) -> str:
    return stack.registry_url.rstrip("/").removesuffix("/apis/ccompat/v7")


def register_ccompat(stack: StackHandle, name: str, auth: tuple[str, str] | None) -> requests.Response:
    return requests.post(f"{stack.registry_url}/subjects/{name}/versions", headers=CCOMPAT, auth=auth, timeout=30,
                         data=json.dumps({"schema": SCHEMA}))


def subjects(stack: StackHandle) -> list[str]:
    response = requests.get(f"{stack.registry_url}/subjects", timeout=30)
    response.raise_for_status()
    return response.json()


def admin(stack: StackHandle) -> tuple[str, str]:
    auth = stack.settings.registry_auth("admin")
    assert auth is not None
    return auth


def producer(stack: StackHandle) -> tuple[str, str]:
    auth = stack.settings.registry_auth("producer")
    assert auth is not None
    return auth


# -- refused without credentials -------------------------------------------------------------------------

@pytest.mark.parametrize("auth", [None, ("producer", "wrong"), ("nobody", "x")], ids=["anonymous", "wrong-password",
                                                                                       "unknown-user"])
def test_a_schema_registration_without_valid_credentials_is_refused_and_registers_nothing(
        stack: StackHandle, auth: tuple[str, str] | None) -> None:
    name = subject()
    response = register_ccompat(stack, name, auth)
    assert response.status_code == 401, response.text
    assert name not in subjects(stack)


def test_the_native_apis_refuse_anonymous_registration_too(stack: StackHandle) -> None:
    name = subject()
    v3 = requests.post(f"{base(stack)}/apis/registry/v3/groups/default/artifacts", timeout=30, json={
        "artifactId": name, "artifactType": "AVRO",
        "firstVersion": {"content": {"content": SCHEMA, "contentType": "application/json"}}})
    v2 = requests.post(f"{base(stack)}/apis/registry/v2/groups/default/artifacts", timeout=30, data=SCHEMA,
                       headers={"Content-Type": "application/json", "X-Registry-ArtifactId": name,
                                "X-Registry-ArtifactType": "AVRO"})
    assert (v3.status_code, v2.status_code) == (401, 401), (v3.text, v2.text)
    assert requests.get(f"{base(stack)}/apis/registry/v3/groups/default/artifacts/{name}",
                        timeout=30).status_code == 404
    assert name not in subjects(stack)


def test_an_anonymous_compatibility_change_is_refused_and_changes_nothing(stack: StackHandle) -> None:
    tick_subject = f"{stack.settings['TICKS_TOPIC']}-value"
    anonymous = registry.registry_client(stack.registry_url)
    before = registry.level(anonymous), registry.level(anonymous, tick_subject)
    refused = [
        requests.put(f"{stack.registry_url}/config", json={"compatibility": "NONE"}, timeout=30),
        requests.put(f"{stack.registry_url}/config/{tick_subject}", json={"compatibility": "NONE"}, timeout=30),
        requests.put(f"{base(stack)}/apis/registry/v3/admin/rules/COMPATIBILITY", json={"config": "NONE"},
                     timeout=30),
    ]
    assert [r.status_code for r in refused] == [401, 401, 401], [r.text for r in refused]
    assert (registry.level(anonymous), registry.level(anonymous, tick_subject)) == before


def test_the_producer_may_register_but_not_change_the_global_level(stack: StackHandle) -> None:
    name = subject()
    registered = register_ccompat(stack, name, producer(stack))
    assert registered.status_code == 200, registered.text
    assert name in subjects(stack)
    refused = requests.put(f"{stack.registry_url}/config", json={"compatibility": "NONE"}, auth=producer(stack),
                           timeout=30)
    assert refused.status_code == 403, refused.text
    registry.delete_subject(registry.registry_client(stack.registry_url, admin(stack)), name)


def test_the_admin_sets_levels_and_the_project_client_authenticates_as_it(stack: StackHandle) -> None:
    client = registry.registry_client(stack.registry_url, admin(stack))
    name = subject()
    registry.register(client, name, SCHEMA)
    registry.set_level(client, "FULL", name)
    assert registry.level(registry.registry_client(stack.registry_url), name) == "FULL"
    global_level = registry.level(client)
    registry.set_level(client, global_level)  # the global level too (unchanged: other tests rely on it)
    registry.delete_subject(client, name)


# -- reads stay open: what the converter and the checks read ---------------------------------------------

def test_reads_need_no_credentials(stack: StackHandle) -> None:
    name = subject()
    schema_id = register_ccompat(stack, name, producer(stack)).json()["id"]
    # AvroConverter 2.6 with use-id=contentId reads this (the ccompat ids are content ids).
    by_content_id = requests.get(f"{base(stack)}/apis/registry/v2/ids/contentIds/{schema_id}", timeout=30)
    assert by_content_id.status_code == 200 and json.loads(by_content_id.text) == json.loads(SCHEMA)
    assert requests.get(f"{stack.registry_url}/schemas/ids/{schema_id}", timeout=30).status_code == 200
    assert requests.get(f"{stack.registry_url}/subjects/{name}/versions", timeout=30).json() == [1]
    check = requests.post(f"{stack.registry_url}/compatibility/subjects/{name}/versions/latest", headers=CCOMPAT,
                          data=json.dumps({"schema": SCHEMA}), timeout=30)
    assert check.status_code == 200 and check.json()["is_compatible"] is True
    registry.delete_subject(registry.registry_client(stack.registry_url, admin(stack)), name)


def test_ticks_registered_by_the_producer_identity_are_decoded_by_the_anonymous_converter(stack: StackHandle) -> None:
    symbol = new_symbol("AUTH")
    sent = TickProducer(stack).send(tick(symbol, n) for n in range(5))
    assert wait_for_rows(stack, [symbol], sent) == sent


# -- one place for the credentials -----------------------------------------------------------------------

@pytest.mark.parametrize("identity", sorted(REGISTRY_USERS))
def test_settings_give_each_identity_its_generated_password(stack: StackHandle, identity: str) -> None:
    secret = REGISTRY_USERS[identity][1]
    assert stack.settings.registry_auth(identity) == (identity, stack.settings[secret])
    assert len(stack.settings[secret]) >= 24
