"""Every notebook of notebooks/ executes top to bottom (nbclient) on the tiny runs, offline, in one kernel: each
starts from an empty namespace (%reset), so none leans on another's names; the imports are paid once."""

import os
from pathlib import Path

import nbformat
import pytest
from helpers import ROOT
from jupyter_client import KernelManager
from nbclient import NotebookClient
from nbformat.v4 import new_code_cell

NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
# the tiny models' analyses at their smallest: one seed, three ratios, a short probe
SMALL = ("sampler.seeds=[0] analyze.ratios=[0,0.5,1] analyze.magnitudes=[1,4] analyze.probe.steps=60 "
         "analyze.probe.eval_tokens=32 analyze.probe.hidden=32")


def test_there_are_notebooks_committed_without_outputs():
    assert {p.stem for p in NOTEBOOKS} >= {"embedding_space", "position_and_angles", "creative"}
    for path in NOTEBOOKS:
        nb = nbformat.read(path, as_version=4)
        nbformat.validate(nb)
        assert all(not c.get("outputs") and c.get("execution_count") is None for c in nb.cells
                   if c.cell_type == "code"), f"{path.name} is committed with outputs"


@pytest.mark.slow
def test_every_notebook_runs_top_to_bottom(tmp_path, runs, monkeypatch):
    monkeypatch.setenv("DTI_RUNS", os.pathsep.join(str(r) for r in runs))
    monkeypatch.setenv("DTI_ANALYZE_OVERRIDES", SMALL)
    monkeypatch.setenv("DTI_ANALYSIS_OUT", str(tmp_path / "analysis"))
    kernel = KernelManager(kernel_name="python3")  # the kernel ipykernel installs with the dev extra
    kernel.start_kernel(cwd=str(tmp_path))
    try:
        for path in NOTEBOOKS:
            nb = nbformat.read(path, as_version=4)
            nb.cells.insert(0, new_code_cell("%reset -f"))
            NotebookClient(nb, km=kernel, timeout=300, resources={"metadata": {"path": str(tmp_path)}}).execute()
            errors = [o for c in nb.cells for o in c.get("outputs", []) if o.output_type == "error"]
            assert not errors, (path.name, errors)
            images = [o for c in nb.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})]
            assert images, f"{path.name} showed no figure"
    finally:
        kernel.shutdown_kernel(now=True)
    written = {p.name for p in Path(tmp_path / "analysis").iterdir()}
    assert written >= {"norms", "neighbours", "drift", "probe", "angles", "interpolate", "blend", "magnitude",
                       "compose"}
