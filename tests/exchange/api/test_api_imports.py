"""The API never imports from the command line: serving a request must not load a CLI module, nor click."""
from __future__ import annotations

import pytest

import ast
import json
import subprocess
import sys
from pathlib import Path

import exchange.api

API = Path(exchange.api.__file__).parent
LOADED = """
import json, sys
from exchange.api import Context, create_app
create_app(Context(book=None, database=None, pseudonymizer=None, publisher=None, bootstrap="", engine_group=""))
# the route modules loaded in create_app
print(json.dumps(sorted(sys.modules)))
"""


def _is_cli(module: str) -> bool:
    return module == "click" or module.startswith("click.") or "cli" in module.split(".")


def test_no_api_module_names_a_cli_module() -> None:
    named = {}
    for path in sorted(API.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module:
                named.setdefault(path.name, []).extend([node.module] + [f"{node.module}.{a.name}" for a in node.names])
            elif isinstance(node, ast.Import):
                named.setdefault(path.name, []).extend(a.name for a in node.names)
    assert len(named) >= 10
    assert {name: [m for m in modules if _is_cli(m)] for name, modules in named.items()
            if any(map(_is_cli, modules))} == {}


@pytest.mark.integration  # runs hrx in a fresh process
def test_the_api_loads_no_cli_module() -> None:
    loaded = json.loads(subprocess.run([sys.executable, "-c", LOADED], capture_output=True, text=True, check=True,
                                       cwd=API.parents[1]).stdout)
    assert "exchange.api.recognition" in loaded
    assert [m for m in loaded if _is_cli(m)] == []
