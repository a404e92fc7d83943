"""The package's shape, read from its source with ast: no import circle, one model resolver for serving and
batch scoring, each shared value defined in one module, one place that gives outputs their final names."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PACKAGE = SRC / "mlgate"


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _target(name: str) -> str | None:
    """The mlgate module an imported name lives in (a submodule if it is one, else its package)."""
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str) -> set[str]:
    """Every mlgate module ``module`` imports, at the top or inside a function alike."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                base = f"{anchor}.{base}".rstrip(".")
            names = [f"{base}.{alias.name}" for alias in node.names]
        else:
            continue
        found |= {t for t in map(_target, names) if t and t != module}
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return found


def test_the_import_graph_has_no_circle() -> None:
    graph = {m: imports(m) for m in MODULES}
    assert cycles(graph) == []
    assert "mlgate.batch.job" in graph["mlgate.batch.local"]  # the graph sees imports


def test_the_cycle_finder_finds_one() -> None:
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_serving_and_batch_share_one_resolver_and_neither_reaches_into_the_other() -> None:
    users = {m for m in MODULES if "mlgate.bundle" in imports(m)}
    assert {"mlgate.serving.server", "mlgate.batch.job"} <= users
    for module in MODULES:
        if module.startswith("mlgate.batch"):
            assert not any(t.startswith("mlgate.serving") for t in imports(module)), module
        if module.startswith("mlgate.serving"):
            assert not any(t.startswith("mlgate.batch") for t in imports(module)), module
    resolvers = [
        m
        for m, path in MODULES.items()
        for node in ast.walk(ast.parse(path.read_text()))
        if isinstance(node, ast.FunctionDef)
        and node.name in ("resolve_model", "model_bundle", "load_batch_model")
    ]
    assert sorted(resolvers) == ["mlgate.batch.job", "mlgate.bundle", "mlgate.bundle"]


def _constants(path: Path) -> list[object]:
    """The literal values in a module's code (docstrings left out)."""
    tree = ast.parse(path.read_text())
    docstrings = {
        id(node.body[0].value)
        for node in ast.walk(tree)
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
    }
    return [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and id(n) not in docstrings]


@pytest.mark.parametrize(
    ("value", "home"),
    [
        ("_quarantine_reason", "mlgate.quarantine"),
        ("_source_row", "mlgate.quarantine"),
        ("_source_file", "mlgate.quarantine"),
        ("_record", "mlgate.quarantine"),
        ("mlgate_bundle.json", "mlgate.modelio"),
        ("local[*]", "mlgate.batch.options"),
        (100_000, "mlgate.batch.options"),
        ("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "mlgate.models"),
        ("regression", "mlgate.config"),
        ("classification", "mlgate.config"),
        ("(prediction)", "mlgate.drift"),
    ],
)
def test_a_shared_value_is_written_in_one_module(value: object, home: str) -> None:
    holders = [m for m, path in MODULES.items() if value in _constants(path)]
    assert holders == [home]


def test_the_drift_threshold_is_the_configs() -> None:
    holders = [m for m, path in MODULES.items() if "psi" in path.read_text() and 0.2 in _constants(path)]
    assert holders == ["mlgate.config"]


RENAMES = {("os", "replace"), ("os", "rename"), ("tempfile", "mkstemp"), ("shutil", "move")}


def test_outputs_get_their_final_names_in_one_place() -> None:
    """Write-then-rename lives in :class:`mlgate.io.Staged`; every other module writes through it."""
    users = set()
    for module, path in MODULES.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
                owner = node.func.value
                if isinstance(owner, ast.Name) and (owner.id, node.func.attr) in RENAMES:
                    users.add(module)
                if node.func.attr == "rename":  # Path.rename (a str has no rename)
                    users.add(f"{module}: .rename()")
    assert users == {"mlgate.io"}
