"""Dependencies declared = dependencies used: every distribution pyproject.toml names is imported by dti (or is a
runtime-only dependency whose reason pyproject.toml states)."""

import ast
import re

import pytest
from helpers import ROOT

tomllib = pytest.importorskip("tomllib")

IMPORT_NAME = {"open_clip_torch": "open_clip", "hydra-core": "hydra", "pillow": "PIL", "pyyaml": "yaml",
               "pytest-xdist": "xdist", "hydra-joblib-launcher": "hydra_plugins", "hydra-submitit-launcher":
               "hydra_plugins"}
RUNTIME_ONLY = {"accelerate": "diffusers and transformers load checkpoints with it"}


def distributions(extra=None) -> list[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    names = project["dependencies"] if extra is None else project["optional-dependencies"][extra]
    return [re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0] for d in names]


def imported_top_level(folder) -> set[str]:
    found = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                found |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                found.add(node.module.split(".")[0])
    return found


def test_every_dependency_is_imported_or_runtime_only():
    used = imported_top_level(ROOT / "dti") | {"open_clip"}  # found by importlib.util.find_spec("open_clip")
    unused = [d for d in distributions() if IMPORT_NAME.get(d, d.replace("-", "_")) not in used
              and d not in RUNTIME_ONLY]
    assert unused == []
    pyproject = " ".join((ROOT / "pyproject.toml").read_text().replace("#", " ").split())
    for name, reason in RUNTIME_ONLY.items():  # declared, and pyproject.toml says why
        assert name in distributions() and f"except {name}: {reason}" in pyproject


def test_every_third_party_import_is_declared():
    declared = {IMPORT_NAME.get(d, d.replace("-", "_")) for d in distributions()}
    stdlib = set(__import__("sys").stdlib_module_names)
    third_party = imported_top_level(ROOT / "dti") - stdlib - {"dti", "hydra_plugins", "__future__"}
    assert third_party <= declared | {"torchvision"}, third_party - declared  # torchvision: probed, never needed
