"""The package's import graph has no cycles, uses only pinned private transformers names, and leaves torch's global
hook dictionaries alone (read from the sources, not by importing)."""

import ast
import importlib
import importlib.util
import inspect
import re
from pathlib import Path

import pytest
import transformers
from packaging.version import Version

from transformers_fac import transformers_internals

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "transformers_fac"
# Namespaces whose exported names are transformers' public API.
PUBLIC_NAMESPACES = ("transformers", "transformers.generation", "transformers.pipelines", "transformers.utils")
TORCH_HOOK_DICTS = (
    "_global_forward_hooks",
    "_global_forward_pre_hooks",
    "_global_backward_hooks",
    "_global_forward_hooks_always_called",
    "_forward_hooks",
    "_forward_pre_hooks",
    "_backward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks_always_called",
)


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def sources() -> dict[str, ast.Module]:
    return {module_name(path): ast.parse(path.read_text(), str(path)) for path in sorted(PACKAGE.rglob("*.py"))}


def runtime_imports(tree: ast.Module, type_only: bool = False):
    """Every import statement of a module, at any depth, except those under `if TYPE_CHECKING:` (included with
    `type_only`)."""
    skipped = set()
    for node in ast.walk(tree):
        if not type_only and isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            skipped.update(id(child) for statement in node.body for child in ast.walk(statement))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)) and id(node) not in skipped:
            yield node


def imported_modules(name: str, node: ast.Import | ast.ImportFrom, is_package: bool) -> list[str]:
    """Absolute names of the modules an import statement loads (a `from . import x` may name a submodule)."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    base = node.module or ""
    if node.level:
        anchor = name.split(".") if is_package else name.split(".")[:-1]
        anchor = anchor[: len(anchor) - (node.level - 1)]
        base = ".".join(anchor + ([base] if base else []))
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph(type_only: bool = False) -> dict[str, set[str]]:
    """Module -> the package modules it imports (at any depth; `type_only`: also under `if TYPE_CHECKING:`)."""
    trees = sources()
    packages = {name for name in trees if (PACKAGE.parent / name.replace(".", "/") / "__init__.py").is_file()}
    graph = {name: set() for name in trees}
    for name, tree in trees.items():
        for node in runtime_imports(tree, type_only):
            graph[name].update(
                target
                for target in imported_modules(name, node, name in packages)
                if target in trees and target != name
            )
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, found, counter = {}, {}, [], set(), [], [0]

    def visit(node: str) -> None:
        index[node] = low[node] = counter[0]
        counter[0] += 1
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_cycles():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles_inside_the_package():
    graph = import_graph()
    assert "transformers_fac.modeling_fun_audio_chat" in graph["transformers_fac"]  # the walk sees the imports
    assert cycles(graph) == []


def test_no_import_cycles_with_type_only_imports():
    """Type-only imports (`if TYPE_CHECKING:`) count: a circle there is a circle in the design."""
    assert cycles(import_graph(type_only=True)) == []


def test_the_engine_imports_nothing_of_serving_live_or_apps():
    graph = import_graph(type_only=True)
    engine = [name for name in graph if name.startswith("transformers_fac.engine")]
    assert len(engine) >= 5
    for name in engine:
        forbidden = [t for t in graph[name] if t.split(".")[1] in ("serving", "live", "cli", "cli_live", "training")]
        assert forbidden == [], name


def is_public(module: str, name: str | None) -> bool:
    if any(part.startswith("_") for part in module.split(".")) or (name or "").startswith("_"):
        return False
    if name is None:
        return module in PUBLIC_NAMESPACES
    return any(hasattr(importlib.import_module(namespace), name) for namespace in PUBLIC_NAMESPACES)


def is_module(name: str) -> bool:
    try:
        return importlib.util.find_spec(name) is not None
    except (ModuleNotFoundError, ValueError):
        return False


def transformers_imports() -> set[str]:
    """`module:name` of every transformers name the package imports (`module:` for a module import)."""
    found = set()
    for name, tree in sources().items():
        if name == "transformers_fac.transformers_internals":
            continue
        for node in runtime_imports(tree):
            if (
                isinstance(node, ast.ImportFrom)
                and node.level == 0
                and (node.module or "").split(".")[0] == "transformers"
            ):
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    found.add(f"{submodule}:" if is_module(submodule) else f"{node.module}:{alias.name}")
            elif isinstance(node, ast.Import):
                found.update(f"{alias.name}:" for alias in node.names if alias.name.startswith("transformers."))
    return found


def test_private_transformers_names_are_pinned():
    private = set()
    for entry in transformers_imports():
        module, name = entry.split(":")
        if not is_public(module, name or None):
            private.add(entry)
    assert private <= set(transformers_internals.PRIVATE_IMPORTS), sorted(
        private - set(transformers_internals.PRIVATE_IMPORTS)
    )
    assert Version(transformers.__version__).release[:2] >= Version(transformers_internals.CHECKED_WITH).release[:2]


@pytest.mark.parametrize("entry", transformers_internals.PRIVATE_IMPORTS)
def test_pinned_private_imports_exist(entry):
    module, name = entry.split(":")
    imported = importlib.import_module(module)
    assert not name or hasattr(imported, name), entry


@pytest.mark.parametrize("entry", transformers_internals.PRIVATE_ATTRIBUTES)
def test_pinned_private_attributes_exist(entry):
    owner, name = entry.rsplit(".", 1)
    module, cls = owner.rsplit(".", 1)
    assert hasattr(getattr(importlib.import_module(module), cls), name), entry


@pytest.mark.parametrize("entry", transformers_internals.PRIVATE_KEYS)
def test_pinned_private_keys_are_still_set_by_transformers(entry):
    module, key = entry.split(":")
    assert f'"{key}"' in inspect.getsource(importlib.import_module(module)), entry


def test_private_keys_read_by_the_package_are_pinned():
    pinned = {entry.split(":")[1] for entry in transformers_internals.PRIVATE_KEYS}
    for path in PACKAGE.rglob("*.py"):
        if path.name != "transformers_internals.py":
            # reads like `kwargs.get("_name")` or `kwargs["_name"]` (not the package's own `state["_name"] = ...`)
            read = set(re.findall(r'\.get\("(_[a-z_]+)"\)|\["(_[a-z_]+)"\](?!\s*=)', path.read_text()))
            assert {key for pair in read for key in pair if key} <= pinned, path


def test_no_module_touches_torch_global_hook_dictionaries():
    for path in PACKAGE.rglob("*.py"):
        text = path.read_text()
        assert not [name for name in TORCH_HOOK_DICTS if name in text], path
