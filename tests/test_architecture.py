"""The house rules that import-linter cannot say: no module uses another module's private names,
and every upward import the layers contract (pyproject.toml) lets through is a lazy one."""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "mosaic_telemetry"


@attrs.frozen
class PrivateUse:
    """One use of another module's private name: where, and what."""

    where: str
    line: int
    name: str

    def __str__(self) -> str:
        return f"{self.where}:{self.line} uses {self.name}"


def module_name(path: Path, root: Path) -> str:
    """The dotted module name of a source file under ``root`` (a package's ``__init__`` is it)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(dotted: str, root: Path) -> bool:
    """Whether ``dotted`` names a module or package of the source tree under ``root``."""
    base = root.joinpath(*dotted.split("."))
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _imported_from(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from ... import`` reads, as seen from ``module``."""
    if node.level == 0:
        return node.module or ""
    parts = module.split(".") if is_package else module.split(".")[:-1]
    base = parts[: len(parts) - (node.level - 1)]
    return ".".join([*base, *([node.module] if node.module else [])])


def private_uses(path: Path, root: Path, top: str) -> Iterator[PrivateUse]:
    """Every private name of another module of ``top`` that the file at ``path`` imports or reads.

    ``from .x import _name`` and ``x._name`` (``x`` bound by an import of a module of ``top``)
    count, unless ``_name`` is itself a module: private modules are how the package is built.
    """
    module = module_name(path, root)
    tree = ast.parse(path.read_text(), filename=str(path))
    where = str(path.relative_to(root))
    bound: dict[str, str] = {}  # local name -> module of ``top`` it is bound to
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = _imported_from(node, module, path.name == "__init__.py")
            if source.split(".")[0] != top:
                continue
            for alias in node.names:
                target = f"{source}.{alias.name}"
                if is_module(target, root):
                    bound[alias.asname or alias.name] = target
                elif _is_private(alias.name) and source != module:
                    yield PrivateUse(where, node.lineno, target)
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.split(".")[0] == top:
                    local = alias.asname or alias.name.split(".")[0]
                    bound[local] = alias.name if alias.asname else top
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Attribute)
            and isinstance(node.value, ast.Name)
            and node.value.id in bound
            and _is_private(node.attr)
        ):
            target = f"{bound[node.value.id]}.{node.attr}"
            if not is_module(target, root) and bound[node.value.id] != module:
                yield PrivateUse(where, node.lineno, target)


def package_private_uses(root: Path, top: str) -> list[str]:
    """Every private cross-module use in the package ``top`` under ``root``, as text."""
    return [
        str(use)
        for path in sorted((root / top).rglob("*.py"))
        for use in private_uses(path, root, top)
    ]


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_the_private_name_check_catches_imports_and_attribute_reads(tmp_path: Path) -> None:
    """A private name imported or read from another module is reported, with its line."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "_hidden = 0\n",
            "pkg/_a.py": "_secret = 1\npublic = 2\n",
            "pkg/_sub/__init__.py": "",
            "pkg/_sub/b.py": (
                "from .._a import _secret\n"  # line 1: a private name, relative
                "from pkg._a import public\n"
                "from .. import _a\n"  # a private *module*: allowed
                "import pkg._a as a2\n"
                "x = _a._secret + a2._secret\n"  # line 5: two private reads
                "def f():\n"
                "    from pkg import _hidden\n"  # line 7: the package door's private name
            ),
        },
    )

    assert package_private_uses(tmp_path, "pkg") == [
        "pkg/_sub/b.py:1 uses pkg._a._secret",
        "pkg/_sub/b.py:7 uses pkg._hidden",
        "pkg/_sub/b.py:5 uses pkg._a._secret",
        "pkg/_sub/b.py:5 uses pkg._a._secret",
    ]


def test_the_private_name_check_allows_private_modules_and_public_names(tmp_path: Path) -> None:
    """Private modules, public names, other packages' privates and one's own names pass."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "from . import _a\nfrom ._a import public\n",
            "pkg/_a.py": "import os\nimport pkg\n_x = os._exit\npublic = pkg._a\ny = _x\n",
            "pkg/_sub/__init__.py": "from . import m as _m\nz = _m.public\n",
            "pkg/_sub/m.py": "public = 1\n",
        },
    )

    assert package_private_uses(tmp_path, "pkg") == []


def test_no_module_uses_another_modules_private_names() -> None:
    """No module of mosaic_telemetry imports or reads a private name of another one."""
    assert package_private_uses(ROOT, "mosaic_telemetry") == []


#: An ``ignore_imports`` entry of the import-linter contract in pyproject.toml.
IGNORED = re.compile(r'"(mosaic_telemetry[\w.]*) -> (mosaic_telemetry[\w.]*)"')


def ignored_imports() -> list[tuple[str, str]]:
    """The (importer, imported) pairs the layers contract lets through, from pyproject.toml."""
    return IGNORED.findall((ROOT / "pyproject.toml").read_text())


def top_level_imports(path: Path, root: Path) -> set[str]:
    """The modules the file imports when it is imported (not inside a function body)."""
    module = module_name(path, root)
    tree = ast.parse(path.read_text())
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
                continue
            if isinstance(child, ast.ImportFrom):
                source = _imported_from(child, module, path.name == "__init__.py")
                found.add(source)
                found.update(f"{source}.{alias.name}" for alias in child.names)
            elif isinstance(child, ast.Import):
                found.update(alias.name for alias in child.names)
            visit(child)

    visit(tree)
    return found


def test_top_level_imports_are_seen_and_function_bodies_are_not(tmp_path: Path) -> None:
    """The lazy-import check sees module-level and class-level imports, not ones in functions."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/m.py": (
                "from . import eager\nclass C:\n    import pkg.in_class\n"
                "    def f(self):\n        from .lazy import thing\n"
            ),
        },
    )

    found = top_level_imports(tmp_path / "pkg" / "m.py", tmp_path)

    assert {"pkg.eager", "pkg.in_class"} <= found
    assert not [name for name in found if "lazy" in name]


@pytest.mark.parametrize(("importer", "imported"), ignored_imports())
def test_every_import_the_layers_contract_ignores_is_lazy(importer: str, imported: str) -> None:
    """An upward import the contract lets through happens only inside a function body."""
    base = PACKAGE.parent.joinpath(*importer.split("."))
    path = base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
    assert path.is_file(), f"{importer}: no such module (a stale ignore_imports entry?)"

    assert imported not in top_level_imports(path, ROOT)


def test_the_layers_contract_lets_only_the_documented_lazy_imports_through() -> None:
    """The only ignored imports are the models' to_dict()/to_json() handing over to _wire."""
    assert ignored_imports() == [
        ("mosaic_telemetry._models", "mosaic_telemetry._wire.events"),
        ("mosaic_telemetry._models", "mosaic_telemetry._wire.predictions"),
    ]
