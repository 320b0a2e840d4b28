"""The house rules ARCHITECTURE.md states, checked on the source (imports inside functions count too):

- one direction of flow: every module has the rank of its stage (base < teacher < labels < student < deploy <
  cli) and imports nothing of a higher rank, so nothing runs back up the flow; and no import cycle;
- the light modules import no torch, transformers, llama_cpp, optimum or Ray, even lazily;
- no pickle from run folders;
- the map is true: every module is in ARCHITECTURE.md's module tables, and every module they name exists.
"""

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "llkd_edge"
HEAVY = {"torch", "transformers", "llama_cpp", "optimum", "ray"}
LIGHT = ("store", "config", "config_deploy", "labelset", "runtime", "files", "registry", "errors", "metrics", "distributions", "data",
         "student.selection", "labels.gold", "labels.active", "labels.signal", "student.relabel", "deploy.model_card")
# The stages in the order data flows through them; the top-level modules other than cli are the base every
# stage may use (errors, files, configs, data reading, the label store's format, the runtime apps embed).
RANKS = {"": 0, "teacher": 1, "labels": 2, "student": 3, "deploy": 4, "cli": 5}


def _path(module: str) -> Path:
    folder = PACKAGE / module.replace(".", "/")
    return folder / "__init__.py" if folder.is_dir() else folder.with_suffix(".py")


def _name(path: Path) -> str:
    rel = path.relative_to(PACKAGE).with_suffix("")
    return ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)


MODULES = sorted(_name(p) for p in PACKAGE.rglob("*.py") if _name(p))


def _resolve(module: str, level: int, target: str | None) -> str:
    """The dotted module (relative to llkd_edge) that ``from <level dots><target>`` in ``module`` names."""
    package = module.split(".") if _path(module).name == "__init__.py" else module.split(".")[:-1]
    base = package[: len(package) - (level - 1)] if level > 1 else package
    return ".".join([*base, *(target.split(".") if target else [])])


def _imports(module: str) -> tuple[set[str], set[str]]:
    """(package modules, top-level third-party names) that ``module`` imports anywhere in its source."""
    tree = ast.parse(_path(module).read_text(encoding="utf-8"))
    ours, theirs = set(), set()
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.level:
            names = [_resolve(module, node.level, node.module)]
            if node.module is None or names[0] not in MODULES:  # `from . import x`, `from .pkg import mod`
                names = [_resolve(module, node.level, ".".join(filter(None, [node.module, a.name])))
                         for a in node.names] + names
            ours.update(n for n in names if n in MODULES)
        elif isinstance(node, ast.ImportFrom) and node.module:
            if node.module == "llkd_edge" or node.module.startswith("llkd_edge."):
                ours.add(node.module.removeprefix("llkd_edge").lstrip("."))
            else:
                theirs.add(node.module.split(".")[0])
        elif isinstance(node, ast.Import):
            theirs.update(alias.name.split(".")[0] for alias in node.names)
    return ours - {"", module}, theirs


GRAPH = {m: _imports(m)[0] for m in MODULES}


def rank(module: str) -> int:
    """A module's stage rank: its package's, cli's, or the base's (0) for the other top-level modules."""
    return RANKS.get(module.split(".")[0], 0)


def test_modules_live_in_stage_packages_or_the_base():
    stray = [m for m in MODULES if "." in m and m.split(".")[0] not in RANKS]
    assert stray == []


@pytest.mark.parametrize("module", MODULES)
def test_nothing_imports_downstream(module):
    upstream = {dep: rank(dep) for dep in GRAPH[module] if rank(dep) > rank(module)}
    assert upstream == {}, f"{module} (rank {rank(module)}) imports later stages: {upstream}"


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
    offenders = [p.name for p in PACKAGE.rglob("*.py") if "weights_only=False" in p.read_text(encoding="utf-8")]
    assert offenders == []


def test_the_map_lists_every_module_and_only_modules():
    text = (ROOT / "ARCHITECTURE.md").read_text(encoding="utf-8")
    rows = re.findall(r"^\| `([\w/]+)\.py` \|", text, flags=re.MULTILINE)
    mapped = {r.replace("/", ".") for r in rows}
    real = {m for m in MODULES if m not in RANKS}  # the packages' __init__ files are not rows
    assert sorted(real - mapped) == [], "modules missing from ARCHITECTURE.md"
    assert sorted(mapped - real) == [], "ARCHITECTURE.md names modules that do not exist"


def test_every_stage_opens_its_teacher_through_the_backend_registry():
    # label, distill, evolve and bench get a teacher from teacher/backend.open_backend (FACTORIES), so a backend
    # added there serves them all; only the teacher package itself knows llama.cpp's Teacher
    direct = sorted(m for m in MODULES if "teacher.llama" in GRAPH[m] and not m.startswith("teacher."))
    assert direct == []
