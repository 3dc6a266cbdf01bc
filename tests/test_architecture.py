"""The house: each sub-package imports only from its own level or below, and no module imports itself in a circle.
Imports inside functions count too."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "dti"
# from the bottom up; train and evaluate share a level and do not import each other
LEVELS = {"core": 0, "method": 1, "backbones": 2, "train": 3, "evaluate": 3, "offline": 4, "run": 5, "sweep": 6,
          "tools": 7, "analyze": 7}
TOP = 8  # dti/__init__.py, dti/__main__.py and the command modules dti/<command>.py


def module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(path: Path, known: set[str]) -> set[str]:
    """The dti modules a file imports (module-level and inside functions)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("dti")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("dti"):
            for alias in node.names:
                child = f"{node.module}.{alias.name}"
                found.add(child if child in known else node.module)
    return {m for m in found if m in known}


def room(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 2 or (len(parts) == 2 and parts[1] in LEVELS) else "top"


def level(module: str) -> int:
    return LEVELS[room(module)] if room(module) != "top" else TOP


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(p, set(known)) - {m} for m, p in known.items()}


def test_every_sub_package_has_a_level():
    rooms = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    assert rooms - {"conf"} <= set(LEVELS), rooms - set(LEVELS)


def test_no_import_runs_upward_or_sideways():
    wrong = []
    for module, targets in graph().items():
        for target in targets:
            if room(target) == room(module) or room(target) == "top" and room(module) == "top":
                continue
            if level(target) > level(module) or (level(target) == level(module) and room(target) != room(module)):
                wrong.append(f"{module} -> {target}")
    # a sub-package's __init__ may re-export its own modules; the package root is the only facade above all
    assert wrong == [], wrong


def test_no_import_cycle():
    edges, state, cycles = graph(), {}, []

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                cycles.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    # a package's __init__ importing its own module that imports the package back is Python's normal layout
    cycles = [c for c in cycles if not any(a.startswith(b + ".") or b.startswith(a + ".") for a, b in zip(c, c[1:]))]
    assert cycles == [], cycles


def test_the_checker_sees_an_upward_import(tmp_path):
    """The rule above can fail: a core module importing run would be caught."""
    fake = tmp_path / "probe.py"
    fake.write_text("from dti.run.job import Job\n")
    assert imports(fake, set(modules())) == {"dti.run.job"} and level("dti.run.job") > level("dti.core.io")
