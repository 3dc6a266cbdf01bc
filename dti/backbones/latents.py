"""Per-image latent statistics, computed once: the VAE never runs in the training loop.

`train.crop=center` encodes each image's centre crop (resized so its shorter side is the resolution). With
`train.crop=random` each image is encoded once at its resized size, uncropped, and every draw takes a fresh window
of the training size at a random place on the latent grid (the VAE's downsampling factor, 8 pixels for SDXL and
Wan, 32 for SANA's DC-AE): the official code's fresh random crop per sample, without encoding every step. Where
this differs from encoding the pixel crop: latents near the window's edges saw the pixels beyond it (the encoder's
receptive field, and its mid-block attention sees the whole image), and offsets fall on the latent grid only. The
crop's top-left in pixels goes to the backbone with the draw (SDXL's micro-conditioning time ids).

A loss mask (white = subject) goes through the same resize, centre crop and mirror as its photo's pixels, is
averaged down to the latent grid (each latent's weight is the mean of its pixels' mask), cached beside the
latents and cut with the same window: each draw's `loss_mask` covers exactly the latents drawn.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from PIL import Image

from dti.backbones.images import resize_center_crop, resize_shorter

CROPS = ("center", "random")


@dataclass
class LatentCache:
    mean: torch.Tensor  # (N, C, [frames,] H, W) on the training device; padded to the largest image
    std: torch.Tensor | None  # None: a deterministic VAE, or train.sample_latents=false
    sizes: torch.Tensor  # (N, 2) latent height, width of each image (before padding)
    original: torch.Tensor  # (N, 2) each photo's height, width in pixels before resizing
    offset: torch.Tensor  # (N, 2) top, left in resized pixels of what was encoded (the centre crop's, or 0)
    window: int  # the training size on the latent grid
    factor: int  # pixels per latent
    random: bool  # a fresh random window per draw
    mask: torch.Tensor | None = None  # (N, 1, [1,] H, W) loss weights in [0, 1] on the latent grid; None: no mask

    def __len__(self) -> int:
        return self.mean.shape[0]

    def draw(self, index: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The latents of `index` (a device tensor): a window (random, or the centre crop encoded), then a sample
        `mean + std * noise` as re-encoding would give; all on the device, no host sync."""
        sizes = self.sizes[index]
        if self.random:
            room = (sizes - self.window + 1).float()
            corner = (torch.rand(len(index), 2, generator=generator, device=sizes.device) * room).floor().long()
        else:
            corner = ((sizes - self.window) // 2).long()
        mean = crop(self.mean[index], corner, self.window)
        if self.std is not None:
            noise = torch.randn(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            mean = mean + crop(self.std[index], corner, self.window) * noise
        pixels = self.window * self.factor
        extras = {"original_size": self.original[index],
                  "crop_top_left": (self.offset[index] + corner * self.factor).float(),
                  "target_size": torch.full((len(index), 2), float(pixels), device=sizes.device)}
        if self.mask is not None:
            extras["loss_mask"] = crop(self.mask[index], corner, self.window)
        return mean, extras


def crop(latents: torch.Tensor, corner: torch.Tensor, window: int) -> torch.Tensor:
    """(B, ..., H, W) -> (B, ..., window, window), each sample from its own top-left `corner` (B, 2)."""
    steps = torch.arange(window, device=latents.device)
    rows = (corner[:, 0:1] + steps).view(len(latents), *([1] * (latents.dim() - 3)), window, 1)
    latents = latents.gather(-2, rows.expand(*latents.shape[:-2], window, latents.shape[-1]))
    cols = (corner[:, 1:2] + steps).view(len(latents), *([1] * (latents.dim() - 3)), 1, window)
    return latents.gather(-1, cols.expand(*latents.shape[:-1], window))


def pixels_to_encode(images: list[Image.Image], resolution: int, flip: bool, crop_mode: str, factor: int):
    """(pixels (3, H, W) in [-1, 1], original (h, w), offset (top, left)) per sample: each image and, with
    `flip`, its mirror image. Random crops keep the whole resized image, trimmed to the latent grid."""
    out = []
    for image in images:
        for im in [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)] if flip else [image]:
            if crop_mode == "center":
                out.append(resize_center_crop(im, resolution))
            else:
                pixels, original = resize_shorter(im, resolution)
                h, w = (pixels.shape[1] // factor) * factor, (pixels.shape[2] // factor) * factor
                out.append((pixels[:, :h, :w].contiguous(), original, (0, 0)))
    return out


def masks_to_encode(masks: list[Image.Image], resolution: int, flip: bool, crop_mode: str, factor: int):
    """(1, H, W) in [0, 1] per sample of `pixels_to_encode` on the same images: each mask through its photo's
    resize, crop and mirror (the same code: a mask is resized as the photo's pixels are)."""
    samples = pixels_to_encode([m.convert("L").convert("RGB") for m in masks], resolution, flip, crop_mode, factor)
    return [((pixels[:1] + 1) / 2).clamp(0, 1) for pixels, _, _ in samples]


def mask_on_grid(mask: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
    """A (1, H, W) pixel mask as (1, 1, [1,] h, w) weights on the grid of `latents` (1, C, [frames,] h, w): each
    latent's weight is the mean of the mask over its pixels."""
    pooled = torch.nn.functional.interpolate(mask[None].float(), size=tuple(latents.shape[-2:]), mode="area")
    return pooled.view(1, 1, *([1] * (latents.dim() - 4)), *latents.shape[-2:]).to(latents.device)


def build_cache(encoded: list[tuple[torch.Tensor, torch.Tensor | None]], samples: list, resolution: int,
                factor: int, random: bool, device: torch.device, masks: list[torch.Tensor] | None = None
                ) -> LatentCache:
    """The cache from each sample's encoded (mean, std) (each (1, C, ..., h, w)), padded to the largest, and
    each sample's mask on the latent grid (`mask_on_grid`), padded alike."""
    heights = [m.shape[-2] for m, _ in encoded]
    widths = [m.shape[-1] for m, _ in encoded]
    shape = (len(encoded), *encoded[0][0].shape[1:-2], max(heights), max(widths))

    def padded(tensors):
        out = torch.zeros((len(encoded), *tensors[0].shape[1:-2], *shape[-2:]), device=device,
                          dtype=tensors[0].dtype)
        for i, t in enumerate(tensors):
            out[i, ..., : t.shape[-2], : t.shape[-1]] = t[0]
        return out

    std = [s for _, s in encoded]
    return LatentCache(
        mean=padded([m for m, _ in encoded]), std=None if any(s is None for s in std) else padded(std),
        sizes=torch.tensor(list(zip(heights, widths)), device=device),
        original=torch.tensor([s[1] for s in samples], dtype=torch.float32, device=device),
        offset=torch.tensor([s[2] for s in samples], dtype=torch.long, device=device),
        window=resolution // factor, factor=factor, random=random,
        mask=None if masks is None else padded(masks))
