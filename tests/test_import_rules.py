"""The layering rules: the core loads no delivery mechanism or engine library, and no plugin
imports another (plugins meet through hooks)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = sorted(p.name for p in (ROOT / "plugins").iterdir() if (p / "__init__.py").exists())
FORBIDDEN_IN_CORE = {"flask", "flask_socketio", "socketio", "engineio", "simple_websocket", "redis",
                     "gevent", "eventlet", "requests", "eventbus_client", *PLUGINS}


def imported_modules(path: Path) -> set[str]:
    """Top-level names of every module ``path`` imports, at module level or inside functions."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


def test_importing_the_core_loads_no_delivery_or_engine_library() -> None:
    code = ("import sys\nimport eventbus, eventbus.signals, eventbus.cli, eventbus.testing\n"
            "print(' '.join(sorted({m.split('.')[0] for m in sys.modules})))")
    loaded = set(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                timeout=60, check=True).stdout.split())
    assert not loaded & FORBIDDEN_IN_CORE, sorted(loaded & FORBIDDEN_IN_CORE)


def test_no_plugin_imports_another() -> None:
    offences = []
    for plugin in PLUGINS:
        others = set(PLUGINS) - {plugin}
        for path in sorted((ROOT / "plugins" / plugin).rglob("*.py")):
            for name in sorted(imported_modules(path) & others):
                offences.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not offences, "\n".join(offences)
