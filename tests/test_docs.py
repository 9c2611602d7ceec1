"""The docs cannot drift: every hook is documented with its signature and has a test, and every
built-in event type is documented as the registry defines it."""

from __future__ import annotations

import inspect
import json
import re
from pathlib import Path

import pytest

from eventbus import Event, EventRegistry, hookspecs
from eventbus.events import BUILTIN_TYPES, EventTypeSpec

ROOT = Path(__file__).resolve().parent.parent
HOOKS_DOC = ROOT / "docs" / "hooks.md"
EVENTS_DOC = ROOT / "docs" / "events.md"


def hook_names() -> list[str]:
    return [name for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if name.startswith("eventbus_") and hasattr(fn, "eventbus_spec")]


def signature_line(name: str) -> str:
    params = inspect.signature(getattr(hookspecs, name)).parameters
    return f"{name}({', '.join(params)})"


def section(text: str, heading: str) -> str:
    """The body under ``heading`` up to the next heading of the same level."""
    match = re.search(rf"^{re.escape(heading)}\n(.*?)(?=^## |\Z)", text, re.M | re.S)
    assert match, f"no section {heading!r}"
    return match.group(1)


def test_every_hookspec_is_found():
    assert len(hook_names()) == 10  # update the docs when this changes


@pytest.mark.parametrize("name", hook_names())
def test_hook_is_documented_with_its_signature(name):
    body = section(HOOKS_DOC.read_text(), f"## {name}")
    lines = body.splitlines()
    assert signature_line(name) in lines, f"docs/hooks.md: write the signature line {signature_line(name)}"
    assert "@hookimpl" in body, f"docs/hooks.md: give an example implementation of {name}"


@pytest.mark.parametrize("name", hook_names())
def test_hook_has_a_test(name):
    this = Path(__file__).resolve()
    mentioned = [path for path in (ROOT / "tests").rglob("test_*.py")
                 if path.resolve() != this and name in path.read_text()]
    assert mentioned, f"no test under tests/ mentions {name}"


def room_cell(spec: EventTypeSpec) -> str:
    if spec.room:
        return f"`{spec.room}`"
    if spec.category == "chat":
        return "`session:<session_id>`"
    return "the room it concerns (given as `room=`, e.g. `session:s-1`)"


def expected_row(spec: EventTypeSpec) -> str:
    """The table row docs/events.md shows for ``spec``, generated from the registry."""
    also = ", ".join(f"`{ns}` room `{room}`" for ns, room in spec.also) or "—"
    history = "yes" if spec.history else "no (ephemeral, no `seq`)"
    return f"| {spec.category} | `{spec.namespace}` | {room_cell(spec)} | {also} | {history} |"


@pytest.mark.parametrize("spec", BUILTIN_TYPES, ids=lambda spec: spec.name)
def test_event_type_is_documented_as_the_registry_defines_it(spec):
    body = section(EVENTS_DOC.read_text(), f"## `{spec.name}`")
    assert spec.description in body
    assert expected_row(spec) in body, f"docs/events.md: the {spec.name} row should read {expected_row(spec)}"
    example = json.loads(re.search(r"```json\n(.*?)\n```", body, re.S).group(1))
    registry = EventRegistry()
    event = Event.from_dict(example, registry)
    assert event.type == spec.name
    assert (event.seq is not None) == spec.history
    assert registry.deliveries(event)[0][0] == spec.namespace


def test_no_undocumented_or_stale_event_sections():
    documented = set(re.findall(r"^## `([a-z0-9_.]+)`$", EVENTS_DOC.read_text(), re.M))
    assert documented == {spec.name for spec in BUILTIN_TYPES}
