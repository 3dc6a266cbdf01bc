"""Cached latents and their crops: a window of the cached latents is what encoding that pixel crop gives, away
from the encoder's receptive field at the window's edges; each draw's window and time ids agree."""

import numpy as np
import torch
from PIL import Image

from dti.backbones.images import resize_shorter
from dti.backbones.latents import build_cache, crop, pixels_to_encode


def test_crop_takes_each_samples_own_window():
    latents = torch.randn(3, 4, 10, 12, generator=torch.Generator().manual_seed(0))
    corner = torch.tensor([[0, 0], [3, 5], [6, 8]])
    out = crop(latents, corner, 4)
    for i, (top, left) in enumerate(corner.tolist()):
        assert torch.equal(out[i], latents[i, :, top:top + 4, left:left + 4])
    video = latents[:, :, None]  # Wan's (B, C, frames, H, W)
    assert torch.equal(crop(video, corner, 4)[:, :, 0], out)


def test_random_windows_stay_inside_and_their_offsets_reach_the_time_ids():
    images = [Image.new("RGB", (96, 64), "red"), Image.new("RGB", (64, 128), "blue")]
    samples = pixels_to_encode(images, 32, flip=False, crop_mode="random", factor=8)
    encoded = [(torch.arange(4 * (p.shape[1] // 8) * (p.shape[2] // 8), dtype=torch.float32).view(
        1, 4, p.shape[1] // 8, p.shape[2] // 8), None) for p, _, _ in samples]
    cache = build_cache(encoded, samples, 32, 8, random=True, device=torch.device("cpu"))
    assert cache.sizes.tolist() == [[4, 6], [8, 4]] and cache.window == 4
    generator, corners = torch.Generator().manual_seed(1), set()
    for _ in range(50):
        index = torch.tensor([0, 1, 0])
        x0, extras = cache.draw(index, generator)
        for i, n in enumerate(index.tolist()):
            top, left = (extras["crop_top_left"][i] / 8).long().tolist()
            assert torch.equal(x0[i], encoded[n][0][0, :, top:top + 4, left:left + 4])  # the window drawn
            corners.add((n, top, left))
        assert extras["original_size"].tolist()[1] == [128, 64] and extras["target_size"].tolist()[0] == [32, 32]
    assert {(0, 0, c) for c in range(3)} <= corners and {(1, r, 0) for r in range(5)} <= corners  # every place


class Passthrough(torch.nn.Module):
    def forward(self, x, *args, **kwargs):
        return x


def test_a_latent_window_matches_encoding_the_pixel_crop_inside_the_receptive_field():
    from diffusers import AutoencoderKL

    torch.manual_seed(0)
    vae = AutoencoderKL(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 16, 16),
                        down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
                        layers_per_block=1, norm_num_groups=4, mid_block_add_attention=False).eval()
    vae.encoder.conv_norm_out = torch.nn.Identity()  # group norm mixes the whole image: take it out of the test
    vae.encoder.mid_block = Passthrough()
    for block in vae.encoder.down_blocks:
        for resnet in block.resnets:
            resnet.norm1 = resnet.norm2 = torch.nn.Identity()
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 255, (160, 192, 3), dtype=np.uint8))
    full, _ = resize_shorter(image, 160)
    with torch.no_grad():
        whole = vae.encode(full[None]).latent_dist.mean  # the cached latents, 4 px per latent
        top, left, size = 16, 24, 128  # a pixel crop on the latent grid: latents (4, 6), window 32
        alone = vae.encode(full[None, :, top:top + size, left:left + size]).latent_dist.mean
    window = crop(whole, torch.tensor([[top // 4, left // 4]]), size // 4)
    margin = 6  # latents whose receptive field (about 25 px) reaches past the crop's edges differ; the rest not
    inside = (slice(None), slice(None), slice(margin, -margin), slice(margin, -margin))
    assert torch.allclose(window[inside], alone[inside], atol=1e-5)
    assert not torch.allclose(window, alone, atol=1e-3)  # at the edges they do differ: said in the docs
