"""The report of a folder of runs: rows keyed by method, the paper's values beside ours, per-subject means,
warnings, and the matplotlib figure."""

import json

import pytest
from helpers import CONF, compose_cfg
from PIL import Image

from dti.sweep.report import load_paper, main, row_key, write_report


def test_paper_numbers_are_data_keyed_by_method():
    paper = load_paper()
    assert paper[("dti", "sdxl")]["image"] == 0.450 and paper[("dti", "sdxl")]["text"] == 0.522
    assert paper[("dti", "sdxl")]["cite"] == "Table 2, DTI; Table 3, RSGD / mean / 1e-4 (DTI)"  # one run, two tables
    assert paper[("t3_rsgd_kappa5e-4", "sdxl")]["text"] == 0.688
    assert paper[("ti [rescale=mean]", "sana_4.8b")]["image"] == 0.287
    assert paper[("dti [+words=qwen_vl]", "sana_1.6b")] ["text"] == 0.697
    assert paper[("P+", "sd15")]["implemented"] is False
    methods = {p.stem for p in (CONF / "method").glob("*.yaml")}
    keyed = {key.split(" [")[0] for key, _ in paper if load_paper()[(key, _)]["implemented"]}
    assert keyed - methods <= {"crossinit", "dco_ti", "dco_dti"}  # rows whose methods have no file yet


def test_row_keys_name_the_method_and_what_else_tells_runs_apart():
    config = {"method": {"name": "dti", "label": "DTI"}, "sampler": {"rescale": "none"}}
    assert row_key(config, "method=dti,model=sdxl") == "dti"
    assert row_key(config, "kappa=0,model=tiny_sdxl") == "dti [kappa=0]"  # a swept value is another row
    assert row_key(config, "kappa=0.0001,model=tiny_sdxl") == "dti [kappa=0.0001]"
    assert row_key(config, "+experiment=table6,+words=qwen_vl,method=dti,model=sdxl") == "dti [+words=qwen_vl]"
    assert row_key({**config, "sampler": {"rescale": "mean"}}, "method=ti,model=sdxl") == "dti [rescale=mean]"
    assert row_key(config, "model.instruction_stages=[train,sample],model=sana_1.6b") == \
        "dti [model.instruction_stages=[train,sample]]"
    assert compose_cfg(["method=ti"]).method.name == "ti"


def test_report_cli_on_an_empty_folder(tmp_path):
    assert main([str(tmp_path)]) == 0 and (tmp_path / "report.md").is_file()
    assert main([str(tmp_path / "missing")]) == 2


def metrics(root, job, subject, prompt_set, image, text, method=("dti", "DTI"), model="sdxl", rescale="none"):
    path = root / job / subject / "samples" / prompt_set / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"subject": subject, "image_sim": image, "text_sim": 0.1, "text_sim_official": text,
                                "seeds": [0, 1, 2, 3],
                                "config": {"method": {"name": method[0], "label": method[1]},
                                           "model": {"name": model}, "sampler": {"rescale": rescale}}}))


def test_report_keeps_prompt_sets_apart_and_averages_per_subject(tmp_path):
    metrics(tmp_path, "a", "dog", "dreambooth", 0.40, 0.5)
    metrics(tmp_path, "a", "dog", "complex", 0.30, 0.5)
    metrics(tmp_path, "a", "cat", "dreambooth", 0.60, 0.5)
    metrics(tmp_path, "b", "cat", "dreambooth", 0.80, 0.5)  # cat scored by a second run: averaged once, warned of
    metrics(tmp_path, "method=ti,model=sdxl", "cat", "dreambooth-rescale_mean", 0.25, 0.45, ("ti", "TI"),
            rescale="mean")
    summary = write_report(tmp_path)
    dreambooth = summary["cells"][(("dti", "dreambooth"), "sdxl")]
    assert dreambooth["image"] == pytest.approx((0.40 + (0.60 + 0.80) / 2) / 2) and dreambooth["subjects"] == 2
    assert summary["cells"][(("dti", "complex"), "sdxl")]["image"] == pytest.approx(0.30)
    assert len(summary["warnings"]) == 1 and "cat" in summary["warnings"][0]
    md = (tmp_path / "report.md").read_text()
    assert "| DTI [dreambooth] | `dti` | 0.550 (0.450, +0.100) [2×4]" in md  # the paper's value beside DreamBooth
    assert "| DTI [complex] | `dti` | 0.300 (—, —) [1×4]" in md
    assert "| TI [rescale=mean] [dreambooth] | `ti [rescale=mean]` | 0.250 (0.243, +0.007) [1×4]" in md
    # paper rows on our backbone appear even without a run of ours: shown missing, not as 0
    assert "| CrossInit [dreambooth] | `crossinit` | — (0.545, —)" in md
    # the figure: matplotlib, one point per cell of ours and one per paper value on our backbones
    image = Image.open(tmp_path / "report.png")
    assert image.info.get("Software", "").startswith("Matplotlib")
    assert summary["points"] == 3 and summary["paper_points"] == len({k for k, b in load_paper() if b == "sdxl"})


def test_scatter_draws_one_marker_per_point(tmp_path):
    from dti.sweep.plots import score_scatter

    fig = score_scatter([("DTI", "sdxl", 0.4, 0.5), ("TI", "sdxl", 0.5, 0.3)], [("DTI", "sdxl", 0.45, 0.52)],
                        tmp_path / "s.png")
    offsets = [c.get_offsets() for c in fig.axes[0].collections]
    assert sum(len(o) for o in offsets) == 3 and fig.axes[0].get_xlabel().startswith("image similarity")
    assert (tmp_path / "s.png").is_file()


def test_table7_report_shows_the_papers_sd_rows_and_the_methods_dti_does_not_implement(tmp_path):
    for model, image in (("sd15", 0.40), ("sd21_base", 0.50)):
        for subject in ("dog", "cat"):
            metrics(tmp_path, f"method=dti,model={model}", subject, "dreambooth", image, 0.55, model=model)
            metrics(tmp_path, f"method=ti,model={model}", subject, "dreambooth", image - 0.1, 0.5, ("ti", "TI"),
                    model=model)
    summary = write_report(tmp_path)
    assert summary["cells"][(("dti", "dreambooth"), "sd21_base")]["subjects"] == 2
    md = (tmp_path / "report.md").read_text()
    assert "| method | key | sd15 image | sd15 text | sd21_base image | sd21_base text |" in md
    assert "| DTI | `dti` | 0.400 (0.418, -0.018) [2×4] | 0.550 (0.554, -0.004) [2×4] | " \
           "0.500 (0.469, +0.031) [2×4] | 0.550 (0.568, -0.018) [2×4] |" in md
    assert "| TI | `ti` | 0.300 (—, —) [2×4] |" in md  # Table 7 has no TI row
    for label, sd15, sd21 in (("P+", (0.273, 0.719), (0.238, 0.663)), ("NeTI", (0.408, 0.579), (0.565, 0.517)),
                              ("CoRe", (0.340, 0.661), (0.357, 0.654))):
        cells = [f"not implemented ({v:.3f}, —)" for v in (*sd15, *sd21)]
        assert f"| {label} | `{label}` | " + " | ".join(cells) + " |" in md
    assert "Table 7, DTI" in md and "Table 7, NeTI" in md
