"""The package layout stays true: imports point one way and never form a cycle.

Layers, lowest first: ``errors`` → ``config`` / ``types`` → ``_protocol`` → ``_io`` →
``_async`` → ``_sync`` → ``cli``. A module may import its own layer or lower ones; the
stand-in (``testing``) imports nothing of the client at all. Imports under
``if TYPE_CHECKING:`` are ignored (they never run).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "lmstudio_async"

LAYERS: dict[str, int] = {
    "errors": 0,
    "config": 1,
    "types": 1,
    "_protocol": 2,
    "_io": 3,
    "_async": 4,
    "_sync": 5,
    "cli": 6,
    "__init__": 7,
    "__main__": 8,
}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _runtime_imports(path: Path) -> set[str]:
    """Absolute names of the package modules ``path`` imports at run time."""
    module = _module_name(path)
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()

    def visit(node: ast.AST) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    visit(other)
                continue
            if isinstance(child, ast.Import):
                found.update(a.name for a in child.names if a.name.startswith("lmstudio_async"))
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join([*base, child.module] if child.module else base)
                else:
                    target = child.module or ""
                if not target.startswith("lmstudio_async"):
                    continue
                for alias in child.names:  # ``from . import x`` may name a submodule
                    candidate = f"{target}.{alias.name}"
                    found.add(candidate if _exists(candidate) else target)
            visit(child)

    visit(ast.parse(path.read_text(encoding="utf-8")))
    found.discard(module)
    return {name for name in found if _exists(name)}


def _exists(name: str) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    base = PACKAGE / rel
    return base.with_suffix(".py").is_file() or (base / "__init__.py").is_file()


def _graph() -> dict[str, set[str]]:
    return {_module_name(p): _runtime_imports(p) for p in sorted(PACKAGE.rglob("*.py"))}


def _layer(module: str) -> str | None:
    parts = module.split(".")
    if len(parts) == 1:
        return "__init__"
    return parts[1]


def test_the_graph_is_read() -> None:
    graph = _graph()
    assert "lmstudio_async._async.client" in graph
    assert "lmstudio_async._io.transport" in graph["lmstudio_async._async.client"]
    assert "lmstudio_async._async.client" in graph["lmstudio_async._sync.client"]


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}
    stack: list[str] = []

    def walk(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            # Importing ``a.b.c`` runs the ``a.b`` package's __init__ first: follow it too.
            if state.get(nxt) == 1:
                cycle = [*stack[stack.index(nxt) :], nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                walk(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            walk(node)


def test_imports_point_down_the_layers() -> None:
    wrong = []
    for module, imports in _graph().items():
        layer = _layer(module)
        if layer == "testing":
            continue
        assert layer in LAYERS, f"{module} is in no layer: add it to LAYERS in this test"
        for target in imports:
            other = _layer(target)
            if other == "testing" and layer in {"cli", "__init__"}:
                continue  # the demo and `serve` start the stand-in
            if other == "__init__" and layer == "cli":
                continue  # __version__
            if other not in LAYERS or LAYERS[other] > LAYERS[layer]:
                wrong.append(f"{module} imports {target}")
    assert wrong == []


def test_async_never_imports_sync() -> None:
    for module, imports in _graph().items():
        if _layer(module) in {"_protocol", "_io", "_async", "errors", "config", "types"}:
            assert not [t for t in imports if _layer(t) in {"_sync", "cli"}], module


def test_the_stand_in_imports_nothing_of_the_client() -> None:
    for module, imports in _graph().items():
        if _layer(module) == "testing":
            assert {_layer(t) for t in imports} <= {"testing"}, (module, imports)


def test_every_exception_lives_in_errors() -> None:
    import importlib

    import lmstudio_async
    from lmstudio_async.errors import LMStudioError

    for module in _graph():
        if not module.endswith("__main__"):
            importlib.import_module(module)
    public = [getattr(lmstudio_async, name) for name in lmstudio_async.__all__]
    classes = {c for c in public if isinstance(c, type) and issubclass(c, BaseException | Warning)}
    pending = [LMStudioError]
    while pending:
        cls = pending.pop()
        classes.add(cls)
        pending.extend(cls.__subclasses__())
    misplaced = sorted(f"{c.__module__}.{c.__qualname__}" for c in classes)
    assert [m for m in misplaced if not m.startswith("lmstudio_async.errors.")] == []
    assert "lmstudio_async.errors.LoopThreadError" in misplaced


def test_the_error_tree_in_the_docs_names_every_exception() -> None:
    # docs/reference/errors.md renders the errors module docstring: its tree must be whole.
    import inspect

    from lmstudio_async import errors

    tree = errors.__doc__ or ""
    classes = [
        name
        for name, value in vars(errors).items()
        if inspect.isclass(value)
        and issubclass(value, BaseException | Warning)
        and value.__module__ == errors.__name__
        and not name.startswith("_")
    ]
    assert "LMStudioError" in classes
    missing = [name for name in classes if f" {name}" not in tree and f"\n{name}" not in tree]
    assert missing == []


def test_no_asyncio_wait_for() -> None:
    # On Python 3.11, asyncio.wait_for returns the inner future's result instead of raising
    # when the waiting task is cancelled in the step that future completes: the cancel is
    # lost (a pool lease cancelled while it waited went on to run its body). The package
    # uses asyncio.timeout or asyncio.wait, which never lose one.
    calls = []
    for path in sorted(PACKAGE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if (
                isinstance(node, ast.Attribute)
                and node.attr == "wait_for"
                and isinstance(node.value, ast.Name)
                and node.value.id == "asyncio"
            ):
                calls.append(f"{path.relative_to(PACKAGE)}:{node.lineno}")
    assert calls == []
