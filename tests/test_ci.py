"""CI runs the README's own set-up block: .ci/run reads README.md's first bash block each time instead of keeping
a copy, and that block is the two set-up commands and the demo."""

import importlib.util

from helpers import ROOT


def readme_commands():
    spec = importlib.util.spec_from_file_location("readme_block", ROOT / ".ci" / "readme_block.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.readme_commands(ROOT / "README.md")


def test_the_readme_block_is_install_test_demo():
    assert readme_commands() == ['pip install -e ".[dev]"', "python -m pytest -q", "python launch.py +experiment=demo"]


def test_ci_runs_the_readme_block_and_keeps_no_copy_of_it():
    ci = (ROOT / ".ci" / "run").read_text()
    assert "readme_block.py README.md" in ci and "eval \"$line\"" in ci
    for command in readme_commands():
        assert command not in ci  # the README is the only home of these lines
    assert "uninstall" not in ci and "torch==" not in ci
