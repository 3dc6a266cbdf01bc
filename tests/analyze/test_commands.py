"""Every analysis as a command on tiny runs made here (4 steps, embeddings saved every 2): the files it writes and
numbers that follow from how the runs were made (DTI at the vocabulary's mean norm near its initializer, TI off
it), bad input as one line with exit 2."""

import json

import pytest
import torch
from PIL import Image

from dti.analyze import analyze
from dti.analyze.cli import main
from dti.method.concept import ConceptEmbedding
from dti.method.formats import read_token_file

FILES = {"norms": {"norms.png", "norms.csv", "norms.json", "summary.md"},
         "neighbours": {"neighbours.png", "neighbours.csv", "neighbours.json", "summary.md"},
         "drift": {"drift.png", "drift.csv", "drift.json", "summary.md"},
         "probe": {"probe.png", "probe.csv", "probe.json", "summary.md"},
         "angles": {"angles.png", "angles.csv", "angles.json", "summary.md"},
         "interpolate": {"interpolate.png", "interpolate.csv", "interpolate.json", "summary.md"},
         "magnitude": {"magnitude.csv", "magnitude.json", "summary.md"},
         "compose": {"compose.json", "summary.md"}}
SMALL_PROBE = ["analyze.probe.steps=80", "analyze.probe.eval_tokens=48", "analyze.probe.hidden=64"]


def run_analysis(name, tmp_path, runs, backbones, *overrides):
    result = analyze(name, ["model=tiny_sdxl", f"analyze.out={tmp_path / name}", "sampler.seeds=[0]", *overrides],
                     runs=runs, backbones=backbones)
    names = {p.name for p in (tmp_path / name).iterdir() if p.is_file()}
    assert FILES[name] <= names, names
    assert any(n.endswith(".png") for n in names)  # every analysis draws something
    assert result["summary"].startswith("# ") and all(p.exists() for p in result["files"])
    for slot in backbones.backbone.encoders:  # every concept an analysis added is gone again
        assert not isinstance(slot.input_embeddings(), ConceptEmbedding)
    return result


def test_norms_marks_dti_at_the_vocabulary_mean_and_ti_off_it(tmp_path, runs, backbones):
    dti_run, ti_run, _ = runs
    result = run_analysis("norms", tmp_path, [dti_run, ti_run], backbones)
    done = json.loads((dti_run / "done.json").read_text())
    for key in ("clip_l", "clip_g"):
        mean = result["vocabulary"][key]["mean"]
        assert mean == pytest.approx(done["norms"][key]["vocabulary_mean"], abs=1e-5)
        assert result["learned"][key]["DTI toy"][0] == pytest.approx(mean, rel=1e-4)
        assert result["learned"][key]["TI toy"][0] > 1.5 * mean  # 4 AdamW steps already grew it
        assert result["vocabulary"][key]["rows"] == 49408
    assert "0.387" in result["summary"] and "0.4515" in result["summary"]  # the official notebook's beside ours


def test_neighbours_by_cosine_and_distance(tmp_path, runs, backbones):
    result = run_analysis("neighbours", tmp_path, runs[:1], backbones, "analyze.query=[apple]", "analyze.top_k=3")
    by = {(q["query"], q["encoder"]): q for q in result["queries"]}
    assert set(by) == {("apple", "clip_l"), ("apple", "clip_g"), ("DTI toy", "clip_l"), ("DTI toy", "clip_g")}
    assert "apple" not in by[("apple", "clip_l")]["cosine_tokens"]  # the query itself is left out
    for key in ("clip_l", "clip_g"):  # 4 DTI steps stay next to the initializer
        assert by[("DTI toy", key)]["cosine_tokens"][0] == "toy"
        assert by[("DTI toy", key)]["cosine"] == sorted(by[("DTI toy", key)]["cosine"], reverse=True)
    rows = (tmp_path / "neighbours" / "neighbours.csv").read_text().splitlines()
    assert len(rows) == 1 + 4 * 3


def test_drift_over_the_saved_steps(tmp_path, runs, backbones):
    result = run_analysis("drift", tmp_path, runs[:2], backbones, "analyze.related=[ball,dog]")
    for key in ("clip_l", "clip_g"):
        dti_path, ti_path = result["encoders"][key]["DTI toy"], result["encoders"][key]["TI toy"]
        assert dti_path["steps"] == [0, 2, 4]
        assert dti_path["cosine"]["initializer"][0] == pytest.approx(1.0, abs=1e-5)
        assert set(dti_path["cosine"]) == {"initializer", "ball", "dog"}
        assert dti_path["cosine"]["initializer"][-1] > ti_path["cosine"]["initializer"][-1]  # the prior holds it
        assert dti_path["norm"][1] == pytest.approx(dti_path["norm"][-1], rel=1e-4)  # fixed norm at every step


def test_probe_on_the_tiny_encoders(tmp_path, runs, backbones):
    result = run_analysis("probe", tmp_path, runs[:2], backbones, *SMALL_PROBE)
    for key in ("clip_l", "clip_g"):
        r = result["encoders"][key]
        assert set(r["scaled"]) == {"0.5", "1.0", "2.0", "4.0", "8.0", "16.0"} and set(r["official"]) == {
            "2.0", "4.0", "8.0", "16.0"}
        assert r["scaled"]["16.0"] < r["scaled"]["1.0"] - 0.3  # the position drowns
        assert 0 <= r["runs"]["TI toy"]["all_positions"] <= 1
    assert "0.882" in result["summary"]  # the official notebook's CLIP-L values beside ours


def test_angles_per_block_for_each_run(tmp_path, runs, backbones):
    result = run_analysis("angles", tmp_path, runs[:2], backbones)
    for key in ("clip_l", "clip_g"):
        per_block = result["per_block_deg"][key]
        assert set(per_block) == {"word 'toy'", "DTI toy", "TI toy"}
        assert all(len(v) == 3 and all(0 < a < 180 for a in v) for v in per_block.values())  # 3 tiny blocks
        assert result["mean_deg"][key]["TI toy"] < result["mean_deg"][key]["DTI toy"]  # the longer row turns less
    assert "21.33" in result["summary"] and "33.52" in result["summary"]


def test_interpolate_renders_the_path_and_exports_a_loadable_blend(tmp_path, runs, backbones):
    dti_toy, _, dti_ball = runs
    result = run_analysis("interpolate", tmp_path, [dti_toy, dti_ball], backbones, "analyze.ratios=[0,0.5,1]")
    ends = {(n["ratio"], n["encoder"]): n for n in result["path"]}
    assert ends[(0.0, "clip_l")]["cos_a"] == pytest.approx(1, abs=1e-5)
    assert ends[(1.0, "clip_l")]["cos_b"] == pytest.approx(1, abs=1e-5)
    assert ends[(0.5, "clip_l")]["norm"] == pytest.approx(ends[(0.0, "clip_l")]["norm"], rel=1e-5)  # slerp, one m*
    (grid,) = result["grids"]
    assert Image.open(grid).size[0] > Image.open(grid).size[1]  # three ratios side by side, one seed
    assert len(list((tmp_path / "interpolate" / "images").rglob("*.png"))) == 3

    blend = run_analysis("interpolate", tmp_path / "b", [dti_toy, dti_ball], backbones, "analyze.ratio=0.5")
    folder = blend["embeddings"]
    token, rows = read_token_file(f"{folder}/learned_embeds.safetensors")
    a, b = read_token_file(dti_toy / "embeddings/learned_embeds.safetensors")[1], read_token_file(
        dti_ball / "embeddings/learned_embeds.safetensors")[1]
    midpoint = torch.nn.functional.normalize(a + b, dim=-1) * a.norm()  # slerp's closed form at 0.5, one norm
    assert token == "<blend>" and torch.allclose(rows, midpoint, atol=1e-6)

    from diffusers import StableDiffusionXLPipeline

    import dti
    from dti.offline.tiny import tiny_sdxl_path

    pipe = StableDiffusionXLPipeline.from_pretrained(str(tiny_sdxl_path()))
    assert dti.load_embeddings(pipe, folder) == ["<blend>"]
    row = pipe.text_encoder.get_input_embeddings().weight[pipe.tokenizer.convert_tokens_to_ids("<blend>")]
    assert torch.allclose(row, rows[0], atol=1e-6)
    again = run_analysis("norms", tmp_path, [folder], backbones)  # an exported blend is a run like any other
    assert list(again["learned"]["clip_l"]) == ["interpolate"]  # no done.json: named after its folder


def test_magnitude_varies_only_the_norm(tmp_path, runs, backbones):
    result = run_analysis("magnitude", tmp_path, runs[:1], backbones, "analyze.magnitudes=[1,8]")
    images = tmp_path / "magnitude" / "images" / "00_a_photo_of_a_concept"
    trained, same, large = (Image.open(images / f"{name}_seed0.png") for name in ("as_trained", "1_m", "8_m"))
    pixels = [torch.tensor(list(im.getdata()), dtype=torch.float32) for im in (trained, same, large)]
    assert (pixels[0] - pixels[1]).abs().max() <= 2  # DTI is trained at 1 m*: the same image
    assert (pixels[0] - pixels[2]).abs().mean() > 1  # 8 m* conditions differently
    norms = result["runs"]["DTI toy"]["norms"]["8"]
    assert norms["clip_l"] == pytest.approx(8 * result["vocabulary_mean"]["clip_l"])


def test_compose_puts_two_concepts_into_one_prompt(tmp_path, runs, backbones):
    result = run_analysis("compose", tmp_path, runs[:2], backbones)
    assert result["tokens"] == {"DTI toy": ["<toy>"], "TI toy": ["<toy-2>"]}  # one placeholder each
    assert result["prompts"] == ["a photo of a <toy> and a <toy-2>"]
    assert len(result["grids"]) == 1


def one_line_error(capsys, argv):
    assert main(argv) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("error: "), err
    return err[0]


def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, runs, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "needs exactly 2 run(s)" in one_line_error(capsys, ["interpolate", "model=tiny_sdxl",
                                                              f"runs=['{runs[0]}']"])
    assert "analyze.top_kk" in one_line_error(capsys, ["norms", "analyze.top_kk=3"])
    assert "analyze.blend" in one_line_error(capsys, ["norms", "analyze.blend=cubic"])
    assert "analyze.ratios" in one_line_error(capsys, ["norms", "analyze.ratios=[1.5]"])
    assert "not a folder" in one_line_error(capsys, ["norms", "model=tiny_sdxl", "runs=[nowhere]"])
    assert 'needs exactly 2 "{}"' in one_line_error(capsys, ["compose", "model=tiny_sdxl", "sampler.seeds=[0]",
                                                             f"runs=['{runs[0]}','{runs[1]}']",
                                                             "analyze.prompts=['a {} photo']"])
    assert main(["colours"]) == 2 and "usage" in capsys.readouterr().err
    assert not (tmp_path / "analysis").exists()  # nothing written by a refused command


def test_other_backbones_gemma(tmp_path, capsys, monkeypatch):
    """SANA's Gemma encoder: norms, angles and compose work; the probe is refused in one line."""
    from dti.analyze.demo import TINY_TRAINING
    from dti.run.conftree import compose
    from dti.run.job import run

    run(compose(["model=tiny_sana", *TINY_TRAINING]), tmp_path / "sana" / "toy")
    runs = [tmp_path / "sana" / "toy"]
    monkeypatch.chdir(tmp_path)
    assert main(["angles", "model=tiny_sana", f"runs=['{runs[0]}']"]) == 0
    angles = json.loads((tmp_path / "analysis/angles/angles.json").read_text())
    assert len(angles["per_block_deg"]["gemma2"]["DTI toy"]) == 2  # the tiny Gemma's two layers
    assert main(["compose", "model=tiny_sana", "sampler.seeds=[0]", f"runs=['{runs[0]}','{runs[0]}']"]) == 0
    assert json.loads((tmp_path / "analysis/compose/compose.json").read_text())["prompts"] == [
        "a photo of a <toy> and a <toy-2>"]
    capsys.readouterr()
    assert "no learned absolute position embeddings" in one_line_error(capsys, ["probe", "model=tiny_sana"])
