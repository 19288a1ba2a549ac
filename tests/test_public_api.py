"""The public API: plugins (built-in ones included) import ``from testbed import ...`` and nothing
else of the core, exactly as a third-party plugin would."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import testbed

PLUGINS = sorted((Path(__file__).parents[1] / "plugins").glob("*.py"))


def core_imports(path: Path) -> list[tuple[int, str]]:
    """(line, what) for every import of the core that is not ``from testbed import NAME``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module.startswith("testbed.") or (node.module == "testbed" and any(
                    alias.name not in testbed.__all__ for alias in node.names)):
                found.append((node.lineno, f"from {node.module} import {', '.join(a.name for a in node.names)}"))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, f"import {a.name}") for a in node.names if a.name == "testbed" or a.name.startswith("testbed.")]
    return found


def test_the_plugins_directory_is_checked():
    assert len(PLUGINS) >= 17 and any(p.name == "frozen.py" for p in PLUGINS)


@pytest.mark.parametrize("path", PLUGINS, ids=lambda p: p.name)
def test_plugins_import_only_the_public_api(path):
    assert core_imports(path) == [], f"{path.name} reaches into the core; export what it needs from testbed/__init__.py"


def test_the_check_catches_private_imports(tmp_path):
    plugin = tmp_path / "reaching.py"
    plugin.write_text("from testbed import hookimpl\nfrom testbed.loop import train\nimport testbed.views\n"
                      "def f():\n    from testbed import resources\n")
    assert [line for line, _ in core_imports(plugin)] == [2, 3, 5]


def test_every_exported_name_exists():
    missing = [name for name in testbed.__all__ if not hasattr(testbed, name)]
    assert missing == []
