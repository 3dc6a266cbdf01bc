"""Tiny runs shared by the analysis tests: DTI and TI of the synthetic toy and DTI of the synthetic ball on the tiny
SDXL (4 steps, embeddings saved at steps 2 and 4), trained once per test process, and one loaded backbone."""

import pytest

from dti.analyze.demo import tiny_runs
from dti.run.build import BackboneCache


@pytest.fixture(scope="session")
def backbones():
    return BackboneCache()


@pytest.fixture(scope="session")
def runs(tmp_path_factory, backbones):
    """[DTI toy, TI toy, DTI ball] run directories."""
    return tiny_runs(tmp_path_factory.mktemp("analysis_runs"), "tiny_sdxl", backbones)
