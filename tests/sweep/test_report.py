"""The report of a folder of runs: cells, paper values beside them, per-subject means, warnings."""

import json

import pytest
from helpers import CONF, compose_cfg


def test_paper_numbers_are_data_with_citations():
    from dti.sweep.report import load_paper

    paper = load_paper()
    assert paper[("DTI", "sdxl")]["image"] == 0.450 and paper[("DTI", "sdxl")]["cite"] == "Table 2, DTI"
    assert paper[("RSGD / mean / 5e-4", "sdxl")]["text"] == 0.688
    labels = {compose_cfg([f"+method={p.stem}"]).method for p in (CONF / "method").glob("*.yaml")}
    assert {row for row, _ in paper} <= labels | {"TI-rescaled", "CrossInit"}


def test_report_cli_on_an_empty_folder(tmp_path):
    from dti.sweep.report import main

    assert main([str(tmp_path)]) == 0 and (tmp_path / "report.md").is_file()
    assert main([str(tmp_path / "missing")]) == 2


def test_report_keeps_prompt_sets_apart_and_averages_per_subject(tmp_path):
    from dti.sweep.report import write_report

    def metrics(job, subject, prompt_set, image, text):
        path = tmp_path / job / subject / "samples" / prompt_set / "metrics.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({"subject": subject, "image_sim": image, "text_sim": 0.1,
                                    "text_sim_official": text, "seeds": [0, 1, 2, 3],
                                    "config": {"method": "DTI", "model": {"name": "sdxl"},
                                               "sampler": {"rescale": "none"}}}))

    metrics("a", "dog", "dreambooth", 0.40, 0.5)
    metrics("a", "dog", "complex", 0.30, 0.5)
    metrics("a", "cat", "dreambooth", 0.60, 0.5)
    metrics("b", "cat", "dreambooth", 0.80, 0.5)  # cat scored by a second run: averaged once, and warned of
    summary = write_report(tmp_path)
    dreambooth = summary["cells"][("DTI [dreambooth]", "sdxl")]
    assert dreambooth["image"] == pytest.approx((0.40 + (0.60 + 0.80) / 2) / 2) and dreambooth["subjects"] == 2
    assert summary["cells"][("DTI [complex]", "sdxl")]["image"] == pytest.approx(0.30)
    assert len(summary["warnings"]) == 1 and "cat" in summary["warnings"][0]
    md = (tmp_path / "report.md").read_text()
    assert "| DTI [dreambooth] | 0.550 (0.450, +0.100) [2×4]" in md  # the paper's value only beside DreamBooth
    assert "| DTI [complex] | 0.300 (—, —) [1×4]" in md
