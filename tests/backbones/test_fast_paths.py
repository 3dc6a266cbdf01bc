"""Each fast path gives the same result as the slow way it replaces (CPU), or on CUDA only (skipped here)."""

import pytest
import torch
from PIL import Image

from dti.backbones.images import resize_center_crop
from dti.offline.tiny import load_tiny_sdxl


@pytest.fixture(scope="module")
def backbone():
    return load_tiny_sdxl()


def test_cached_latents_draw_what_re_encoding_would(backbone):
    """The VAE runs once per image; each step's draw mean + std·noise is the posterior sample re-encoding gives."""
    image = Image.new("RGB", (40, 48), (120, 30, 200))
    cache = backbone.cache_latents([image], 32, flip=False)
    drawn, _ = cache.draw(torch.tensor([0]), torch.Generator().manual_seed(3))
    pixels = resize_center_crop(image, 32)[0][None]
    with torch.no_grad():
        dist = backbone.vae.encode(pixels).latent_dist
    noise = torch.randn(dist.mean.shape, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(drawn, (dist.mean + dist.std * noise) * backbone.vae_scale, atol=1e-6)


def test_pretokenised_prompts_equal_tokenising_each_step(backbone):
    from dti.train.templates import OBJECT

    prompts = [t.format("dog") for t in OBJECT]
    table = backbone.tokenize(prompts)
    pick = torch.tensor([3, 0, 7])
    again = backbone.tokenize([prompts[i] for i in pick.tolist()])
    assert all(torch.equal(t[pick], a) for t, a in zip(table, again))


def test_wan_batched_guidance_samples_what_wan_pipeline_samples():
    """One denoiser call per step for both guidance passes (WanPipeline makes two): the same final latents."""
    from dti.offline.tiny import load_tiny

    wan = load_tiny("dti.backbones.wan.WanBackbone", "tiny_wan")
    calls = []
    wan.transformer.register_forward_pre_hook(lambda module, args: calls.append(1))
    seeds = [0, 1, 7]
    with torch.no_grad():
        cond = wan.encode_text(wan.tokenize(["a photo of a toy", "a toy on the beach", "a red toy"]))["prompt_embeds"]
        uncond = wan.encode_text(wan.tokenize([""] * 3))["prompt_embeds"]
        stock = wan.pipeline(prompt_embeds=cond, negative_prompt_embeds=uncond, height=32, width=32, num_frames=1,
                             num_inference_steps=4, guidance_scale=5.0, generator=wan.generators(seeds),
                             output_type="latent").frames
        assert len(calls) == 8
        batched = wan._denoise(cond, uncond, seeds, 32, 32, 4, 5.0)
    assert len(calls) == 8 + 4
    assert torch.allclose(stock, batched, atol=1e-5), (stock - batched).abs().max()
    assert (batched[0] - batched[1]).abs().max() > 0.1  # different prompts and seeds: a comparison that can fail
    wan.batch_cfg = True
    calls.clear()
    wan.generate(["a toy"], [0], 32, 32, 4, 5.0)
    assert len(calls) == 4  # generate takes the batched path


def test_compiled_denoiser_is_used_and_matches_eager(tmp_path, monkeypatch):
    """model.compile=true on CPU, with the aot_eager backend (graph capture without inductor's minutes of code
    generation on two cores; the inductor run is the CUDA test below)."""
    import torch._dynamo
    from helpers import FAST, compose_cfg
    from safetensors.torch import load_file

    from dti.run import job

    fast = [*FAST, "train.steps=2"]
    job.run(compose_cfg(fast), tmp_path / "eager")
    real = torch.nn.Module.compile
    monkeypatch.setattr(torch.nn.Module, "compile", lambda self, **k: real(self, backend="aot_eager", **k))
    torch._dynamo.reset()
    job.run(compose_cfg([*fast, "model.compile=true"]), tmp_path / "compiled")
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the denoiser ran as captured graphs
    a = load_file(tmp_path / "eager" / "embeddings" / "toy-dti.safetensors")
    b = load_file(tmp_path / "compiled" / "embeddings" / "toy-dti.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    torch._dynamo.reset()


cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.gpu
@cuda
def test_compiled_denoiser_matches_eager_on_cuda(tmp_path):
    from helpers import FAST, compose_cfg

    from dti.run import job

    eager = job.run(compose_cfg([*FAST, "model.device=cuda"]), tmp_path / "eager")
    compiled = job.run(compose_cfg([*FAST, "model.device=cuda", "model.compile=true"]), tmp_path / "compiled")
    assert eager["train"]["step"] == compiled["train"]["step"]
    from safetensors.torch import load_file
    a = load_file(tmp_path / "eager" / "embeddings" / "toy-dti.safetensors")
    b = load_file(tmp_path / "compiled" / "embeddings" / "toy-dti.safetensors")
    assert all(torch.allclose(a[k], b[k], atol=1e-3) for k in a)


@pytest.mark.gpu
@cuda
def test_bf16_frozen_weights_track_fp32_on_cuda(tmp_path):
    from helpers import FAST, compose_cfg

    from dti.run import job

    job.run(compose_cfg([*FAST, "model.device=cuda", "model.dtype=float32"]), tmp_path / "fp32")
    job.run(compose_cfg([*FAST, "model.device=cuda", "model.dtype=bfloat16"]), tmp_path / "bf16")
    from safetensors.torch import load_file
    a = load_file(tmp_path / "fp32" / "embeddings" / "toy-dti.safetensors")
    b = load_file(tmp_path / "bf16" / "embeddings" / "toy-dti.safetensors")
    for k in a:  # the tables stay fp32 either way; directions agree closely after a few steps
        assert b[k].dtype == torch.float32
        assert torch.nn.functional.cosine_similarity(a[k], b[k], dim=-1).min() > 0.99
