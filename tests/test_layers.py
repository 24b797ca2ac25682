"""The house's layers, read statically (AST, imports inside functions included): no import cycle among
components/ and jobs/, no component imports `components.cli`, and no module reaches into another
component's internals (components meet through artifacts, their package's public names and the shared
modules)."""

from __future__ import annotations

import ast
import os

from tests.conftest import REPO

COMPONENTS = ("preprocess", "trainer", "evaluator", "pusher")  # subpackages of components/ with internals


def _module_name(path: str) -> str:
    rel = os.path.relpath(path, REPO)[:-3].replace(os.sep, ".")
    if rel.startswith("jobs."):
        rel = "srgan_jobs." + rel[len("jobs."):]
    return rel[: -len(".__init__")] if rel.endswith(".__init__") else rel


def _is_module(name: str) -> bool:
    rel = os.path.join(REPO, *name.split("."))
    return os.path.isfile(rel + ".py") or os.path.isfile(os.path.join(rel, "__init__.py"))


def import_graph() -> dict[str, set[str]]:
    """{module: modules of this project it imports}, for every .py under components/ and jobs/."""
    graph = {}
    for top in ("components", "jobs"):
        for folder, _dirs, files in os.walk(os.path.join(REPO, top)):
            for f in files:
                if not f.endswith(".py"):
                    continue
                path = os.path.join(folder, f)
                tree = ast.parse(open(path).read(), path)
                deps = set()
                for node in ast.walk(tree):
                    if isinstance(node, ast.Import):
                        deps |= {a.name for a in node.names if a.name.split(".")[0] == "components"}
                    elif isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "components":
                        for a in node.names:
                            sub = f"{node.module}.{a.name}"
                            deps.add(sub if _is_module(sub) else node.module)
                graph[_module_name(path)] = deps
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node):
        state[node] = 1
        path.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                return path[path.index(dep):] + [dep]
            if dep not in state:
                found = visit(dep)
                if found:
                    return found
        state[node] = 2
        path.pop()
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_cycle_finder_finds_cycles():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 30 and "components.trainer.loop" in graph and "srgan_jobs.train" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_no_component_imports_cli():
    users = sorted(m for m, deps in import_graph().items() if "components.cli" in deps and m.startswith("components"))
    assert users == [], users


def test_no_module_reaches_into_another_components_internals():
    reaches = []
    for module, deps in import_graph().items():
        own = module.split(".")[1] if module.startswith("components.") else None
        for dep in deps:
            parts = dep.split(".")
            if len(parts) > 2 and parts[1] in COMPONENTS and parts[1] != own:
                reaches.append(f"{module} -> {dep}")
    assert reaches == [], reaches

