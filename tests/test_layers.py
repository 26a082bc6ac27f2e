"""One-way layers: exchange → adapters → codes → schemas. No module imports a layer above its own.

Every import counts, wherever it stands: at the top of a module or inside a function, ``import x``,
``from x import y``, relative imports, ``importlib.import_module("x")`` and the lazy ``"module:attr"``
strings the CLI resolves on first use. The checker reads the source with :mod:`ast`; import-linter's
``layers`` contract checks the same graph independently (it does not see the strings).
"""
from __future__ import annotations

import ast
import re
import textwrap
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Top first: a package may import the ones after it, never the ones before.
LAYERS = ("exchange", "adapters", "codes", "schemas")

#: A lazily imported object: ``"package.module:attribute"``.
LAZY_REFERENCE = re.compile(r"(?P<module>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*):[A-Za-z_]\w*")


@dataclass(frozen=True)
class Edge:
    """``importer`` imports ``imported`` at ``path:line``."""

    path: Path
    line: int
    importer: str
    imported: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.importer} imports {self.imported}"


def module_name(root: Path, path: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(root: Path, dotted: str) -> bool:
    target = root.joinpath(*dotted.split("."))
    return target.with_suffix(".py").is_file() or (target / "__init__.py").is_file()


def _resolve_relative(importer: str, is_package: bool, level: int, module: str | None) -> str:
    """``from {'.' * level}{module} import …`` inside ``importer`` (PEP 328)."""
    package = importer.split(".") if is_package else importer.split(".")[:-1]
    base = package[: len(package) - (level - 1)]
    return ".".join([*base, module] if module else base)


def imports_of(root: Path, path: Path) -> Iterator[Edge]:
    """Every module ``path`` imports, however it is spelt, with the line it is on."""
    importer = module_name(root, path)
    is_package = path.name == "__init__.py"
    relative = path.relative_to(root)
    for node in ast.walk(ast.parse(path.read_bytes(), str(path))):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield Edge(relative, node.lineno, importer, alias.name)
        elif isinstance(node, ast.ImportFrom):
            base = (_resolve_relative(importer, is_package, node.level, node.module) if node.level
                    else node.module or "")
            for alias in node.names:
                # ``from package import module`` imports the module; ``from module import name`` the module.
                candidate = f"{base}.{alias.name}"
                yield Edge(relative, node.lineno, importer,
                           candidate if alias.name != "*" and _is_module(root, candidate) else base)
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            name = node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", None)
            if name in ("import_module", "__import__"):
                target = node.args[0].value
                if target.startswith("."):
                    level = len(target) - len(target.lstrip("."))
                    target = _resolve_relative(importer, is_package, level, target.lstrip(".") or None)
                yield Edge(relative, node.lineno, importer, target)
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) \
                and (lazy := LAZY_REFERENCE.fullmatch(node.value)):
            yield Edge(relative, node.lineno, importer, lazy["module"])


def upward_imports(root: Path, layers: tuple[str, ...] = LAYERS) -> list[Edge]:
    """Each import, in the packages ``layers`` under ``root``, of a layer above the importer's."""
    rank = {name: i for i, name in enumerate(layers)}
    found: list[Edge] = []
    for layer in layers:
        for path in sorted((root / layer).rglob("*.py")):
            for edge in imports_of(root, path):
                target = edge.imported.split(".")[0]
                if target in rank and rank[target] < rank[layer]:
                    found.append(edge)
    return sorted(found, key=lambda e: (str(e.path), e.line, e.imported))


def offenders(root: Path) -> list[Edge]:
    """The upward imports under ``root``: none is excused."""
    return upward_imports(root)


def _listing(edges: list[Edge]) -> str:
    return "\n".join(f"  {edge}" for edge in edges)


def test_no_module_imports_a_higher_layer() -> None:
    found = offenders(ROOT)
    assert not found, f"imports of a higher layer ({' → '.join(LAYERS)}):\n{_listing(found)}"


def _plant(root: Path, files: dict[str, str]) -> None:
    for name in ("exchange", "adapters", "codes", "schemas", "adapters/sub"):
        (root / name).mkdir(parents=True, exist_ok=True)
        (root / name / "__init__.py").touch()
    for name, source in files.items():
        (root / name).write_text(textwrap.dedent(source))


#: Each way of importing, planted in adapters/sub/planted.py, and the module it must be seen to import.
FORMS = {
    "top-level import": ("import exchange.engine\n", "exchange.engine"),
    "aliased import": ("import exchange.engine as engine\n", "exchange.engine"),
    "from package import module": ("from exchange import engine\n", "exchange.engine"),
    "from module import name": ("from exchange.engine import ResultEngine\n", "exchange.engine"),
    "star import": ("from exchange.engine import *\n", "exchange.engine"),
    "inside a function": ("def run():\n    from exchange import engine\n", "exchange.engine"),
    "inside a method, under a condition": (
        "class C:\n    def m(self):\n        if True:\n            import exchange.engine\n", "exchange.engine"),
    "under TYPE_CHECKING": ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import exchange.engine\n",
                            "exchange.engine"),
    "importlib.import_module": ("import importlib\nimportlib.import_module('exchange.engine')\n", "exchange.engine"),
    "bare import_module": ("from importlib import import_module\n\ndef f():\n    import_module('exchange.engine')\n",
                           "exchange.engine"),
    "__import__": ("__import__('exchange.engine')\n", "exchange.engine"),
    "lazy module:attr string": ("COMMANDS = {'run': 'exchange.engine:ResultEngine'}\n", "exchange.engine"),
}


@pytest.mark.parametrize("form", FORMS)
def test_the_checker_sees_every_form_of_import(tmp_path: Path, form: str) -> None:
    source, imported = FORMS[form]
    planted = "import codes\n" + source  # a downward import first: it must not count
    _plant(tmp_path, {"exchange/engine.py": "", "adapters/sub/planted.py": planted})
    line = next(number for number, text in enumerate(planted.splitlines(), 1) if "exchange" in text)
    assert [str(edge) for edge in upward_imports(tmp_path)] == [
        f"adapters/sub/planted.py:{line}: adapters.sub.planted imports {imported}"]


def test_the_checker_names_file_and_line_and_passes_downward_and_relative_imports(tmp_path: Path) -> None:
    _plant(tmp_path, {
        "exchange/engine.py": "import adapters.sub\nfrom codes import book\nimport schemas\n",
        "exchange/cli.py": "import importlib\nLAZY = {'run': 'exchange.engine:main', 'fmt': 'codes.book:fmt'}\n",
        "codes/book.py": "from . import units\nfrom .units import ucum\nimport schemas\n\n\ndef late():\n"
                         "    from adapters.sub import helper\n",
        "codes/units.py": "",
        "adapters/publish.py": "",
        "adapters/sub/helper.py": "from .. import publish\nfrom ..publish import Publisher\nimport json\n",
        "schemas/events.py": "'''Mentions exchange.engine:main in prose, which is not a reference.'''\n"
                             "import importlib\n\n\ndef load():\n    return importlib.import_module('codes.book')\n",
    })
    assert [str(edge) for edge in upward_imports(tmp_path)] == [
        "codes/book.py:7: codes.book imports adapters.sub.helper",
        "schemas/events.py:6: schemas.events imports codes.book",
    ]


def test_relative_imports_resolve_against_the_importing_package() -> None:
    assert _resolve_relative("adapters.dicom.scp", False, 1, "spool") == "adapters.dicom.spool"
    assert _resolve_relative("adapters.dicom", True, 1, "spool") == "adapters.dicom.spool"
    assert _resolve_relative("adapters.dicom.scp", False, 2, None) == "adapters"
    assert _resolve_relative("adapters.dicom.scp", False, 2, "publish") == "adapters.publish"


def test_a_planted_upward_import_fails_the_layer_check(tmp_path: Path) -> None:
    """The real check, run on a copy of the tree with one upward import added inside a function."""
    import shutil

    for layer in LAYERS:
        shutil.copytree(ROOT / layer, tmp_path / layer, ignore=shutil.ignore_patterns("__pycache__", "data"))
    before = offenders(tmp_path)
    planted = tmp_path / "schemas" / "topics.py"
    planted.write_text(planted.read_text("utf-8") + "\n\ndef _planted():\n    from codes import book\n", "utf-8")
    line = len(planted.read_text("utf-8").splitlines())
    assert [str(edge) for edge in offenders(tmp_path) if edge not in before] == [
        f"schemas/topics.py:{line}: schemas.topics imports codes.book"]


def test_import_linter_layers_contract(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """import-linter's own graph (grimp, which also reads imports inside functions) agrees."""
    from importlinter import configuration
    from importlinter.application.use_cases import lint_imports

    configuration.configure()  # what the lint-imports command does first

    config = tmp_path / "importlinter.ini"
    config.write_text(textwrap.dedent("""\
        [importlinter]
        root_packages =
            {packages}
        include_external_packages = False

        [importlinter:contract:layers]
        name = One-way layers
        type = layers
        layers =
            {packages}
        """).format(packages="\n    ".join(LAYERS)))
    passed = lint_imports(config_filename=str(config), cache_dir=None, no_logo=True, is_debug_mode=True)
    assert passed, capsys.readouterr().out
