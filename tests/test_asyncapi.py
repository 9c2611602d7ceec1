"""The AsyncAPI document: valid against the official AsyncAPI 3.0.0 JSON Schema (from the
npm package @asyncapi/specs, installed by `npm ci` in dashboard/), every reference resolves,
and it follows the event registry, plugin types included."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from eventbus import Config, EventRegistry, hookimpl
from eventbus.cli import CLIState
from eventbus.plugins import create_plugin_manager

pytest.importorskip("flask_socketio")
jsonschema = pytest.importorskip("jsonschema", reason="pip install jsonschema (in the test extra)")

from eventbus_socketio.asyncapi import CLIENT_EVENTS, asyncapi_command, build_asyncapi  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SCHEMA = ROOT / "dashboard" / "node_modules" / "@asyncapi" / "specs" / "schemas" / "3.0.0-without-$id.json"


@pytest.fixture(scope="module")
def validator() -> Any:
    if not SCHEMA.is_file():
        pytest.skip("the AsyncAPI 3.0.0 schema is missing: run `npm ci` in dashboard/ (@asyncapi/specs)")
    schema = json.loads(SCHEMA.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


def errors(validator: Any, doc: dict[str, Any]) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message[:200]}" for e in validator.iter_errors(doc)]


def refs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        if isinstance(node.get("$ref"), str):
            yield node["$ref"]
        for value in node.values():
            yield from refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from refs(value)


def resolve(doc: dict[str, Any], ref: str) -> Any:
    assert ref.startswith("#/"), ref
    node: Any = doc
    for part in ref[2:].split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        assert isinstance(node, dict) and part in node, f"{ref} does not resolve (at {part!r})"
        node = node[part]
    return node


def test_document_is_valid_asyncapi_3(validator: Any) -> None:
    doc = build_asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    assert errors(validator, doc) == []


def test_the_validator_catches_a_broken_document(validator: Any) -> None:
    doc = build_asyncapi()
    doc["operations"]["sendMonitoring"]["action"] = "publish"  # AsyncAPI 2 wording
    del doc["info"]["title"]
    found = errors(validator, doc)
    assert len(found) >= 2, found


def test_every_reference_resolves() -> None:
    doc = build_asyncapi()
    found = list(refs(doc))
    assert len(found) > 50
    for ref in found:
        resolve(doc, ref)


def test_messages_follow_the_registry() -> None:
    registry = EventRegistry()
    doc = build_asyncapi(registry)
    messages = doc["components"]["messages"]
    for spec in registry:
        message = messages[spec.name]
        assert message["name"] == spec.name and message["summary"] == spec.description
        payload = message["payload"]
        assert payload["properties"]["type"] == {"const": spec.name}
        assert payload["properties"]["data"] == dict(spec.schema)
    channels = doc["channels"]
    assert channels["monitoring"]["x-socketio-namespace"] == "/monitoring"
    assert "alert_created" in channels["admin"]["messages"] and "alert_created" in channels["monitoring"]["messages"]
    assert set(channels["chatSession"]["messages"]) >= {"chat_message", "chat_response", "typing_indicator",
                                                         "client.chat_message", "client.join_room", "ack"}
    assert "client.chat_message" not in channels["monitoring"]["messages"]
    assert messages["typing_indicator"]["payload"]["properties"]["seq"] == {"type": "null"}
    receive = [op for op in doc["operations"].values() if op["action"] == "receive"]
    assert len(receive) == sum(len(namespaces) for *_, namespaces in CLIENT_EVENTS)
    assert all(op["reply"]["messages"] for op in receive)
    assert set(doc["components"]["messages"]["webhook"]["headers"]["required"]) == {
        "webhook-id", "webhook-timestamp", "webhook-signature"}


class DeployPlugin:
    @hookimpl
    def eventbus_register_event_types(self, register: Any) -> None:
        register("deploy_finished", category="ops", description="A deployment finished.",
                 schema={"type": "object", "properties": {"service": {"type": "string"}}})
        register("build.log", category="ci", namespace="/monitoring", room=None)


def test_plugin_event_types_appear_through_the_command(validator: Any, tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path / "data"))
    pm = create_plugin_manager(config, [DeployPlugin()], load_entrypoints=False)
    out = tmp_path / "asyncapi.json"
    result = CliRunner().invoke(asyncapi_command, ["--output", str(out), "--host", "events.example.com:443"],
                                obj=CLIState(config, pm))
    assert result.exit_code == 0, result.output
    doc = json.loads(out.read_text())
    assert errors(validator, doc) == []
    assert doc["servers"]["socketio"]["host"] == "events.example.com:443"
    assert doc["components"]["messages"]["deploy_finished"]["summary"] == "A deployment finished."
    assert "deploy_finished" in doc["channels"]["monitoring"]["messages"]
    # A type without a fixed room gets a parameterised channel in its namespace.
    generic = [c for c in doc["channels"].values() if c["address"] == "{room}"]
    assert len(generic) == 1 and "build.log" in generic[0]["messages"]
    for ref in refs(doc):
        resolve(doc, ref)


def test_command_prints_json_to_stdout(tmp_path: Path) -> None:
    config = Config(data_dir=str(tmp_path / "data"))
    pm = create_plugin_manager(config, load_entrypoints=False)
    result = CliRunner().invoke(asyncapi_command, [], obj=CLIState(config, pm))
    assert result.exit_code == 0, result.output
    assert json.loads(result.output)["info"]["title"] == "eventbus"
