"""The house rules ARCHITECTURE.md states, checked on the source: one direction of flow (no import cycle
among the package's modules, counting imports inside functions too), no pickle from run folders, and the
light modules (store, config, runtime, selection, files, registry, ...) import no torch, transformers,
llama_cpp, optimum or Ray, even lazily (pandas for tables is allowed)."""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[2] / "llkd_edge"
HEAVY = {"torch", "transformers", "llama_cpp", "optimum", "ray"}
LIGHT = ("store", "config", "runtime", "selection", "files", "registry", "errors", "metrics", "distributions", "gold",
         "model_card", "active", "relabel")


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(package modules, top-level third-party names) that ``module`` imports anywhere in its source."""
    tree = ast.parse((PACKAGE / f"{module}.py").read_text(encoding="utf-8"))
    ours, theirs = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            if node.level == 1:
                if node.module:
                    ours.add(node.module.split(".")[0])
                else:
                    ours.update(alias.name for alias in node.names)
            elif node.module:
                theirs.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            theirs.update(alias.name.split(".")[0] for alias in node.names)
    return {m for m in ours if (PACKAGE / f"{m}.py").exists()}, theirs


MODULES = sorted(p.stem for p in PACKAGE.glob("*.py") if p.stem != "__init__")
GRAPH = {m: _imports(m)[0] for m in MODULES}


def test_the_package_has_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for dep in sorted(GRAPH[module]):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [module, dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, path + [dep])
        state[module] = 2

    for module in MODULES:
        if module not in state:
            visit(module, [module])


@pytest.mark.parametrize("module", LIGHT)
def test_light_modules_import_nothing_heavy(module):
    def reach(m: str, seen: set[str]) -> set[str]:
        seen.add(m)
        heavy = _imports(m)[1] & HEAVY
        for dep in GRAPH[m] - seen:
            heavy |= reach(dep, seen)
        return heavy

    assert reach(module, set()) == set()


def test_nothing_unpickles_with_weights_only_false():
    offenders = [p.name for p in PACKAGE.glob("*.py") if "weights_only=False" in p.read_text(encoding="utf-8")]
    assert offenders == []
