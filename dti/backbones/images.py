"""Image loading, the one preprocessing every backbone shares (resize shorter side, centre crop), and a content
key per image."""

from __future__ import annotations

import hashlib
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from dti.core.errors import InputError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}


def load_images(folder: Path, field: str) -> list[Image.Image]:
    """Every image in `folder` (sorted by name), fully decoded, RGB. Bad input raises `InputError` naming `field`."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(field, str(folder), "folder does not exist")
    paths = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise InputError(field, str(folder), f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder")
    images = []
    for path in paths:
        try:
            with Image.open(path) as im:
                im = ImageOps.exif_transpose(im)  # phone photos store rotation in EXIF
                images.append(im.convert("RGB"))  # convert() forces a full decode: truncated files fail here
        except Exception as err:  # PIL raises many types for corrupt data
            raise InputError(field, str(path), f"unreadable image ({type(err).__name__}: {err})") from None
    return images


def resize_center_crop(image: Image.Image, resolution: int) -> tuple[torch.Tensor, tuple[int, int], tuple[int, int]]:
    """(C, H, W) tensor in [-1, 1], the original (height, width), and the crop's top-left in resized pixels."""
    w, h = image.size
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, math.ceil(w * scale - 1e-6)), max(resolution, math.ceil(h * scale - 1e-6))
    resized = image.resize((new_w, new_h), Image.Resampling.BICUBIC)
    top, left = (new_h - resolution) // 2, (new_w - resolution) // 2
    cropped = resized.crop((left, top, left + resolution, top + resolution))
    array = np.asarray(cropped, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), (h, w), (top, left)


def prepare(images: list[Image.Image], resolution: int, flip: bool):
    """`resize_center_crop` of every image and, with `flip`, of its mirror image too (cached as extra samples)."""
    out = []
    for image in images:
        variants = [image, image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)] if flip else [image]
        out += [resize_center_crop(im, resolution) for im in variants]
    return out


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(N, C, H, W) in [-1, 1] -> PIL images."""
    array = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]



def image_key(image: Image.Image) -> str:
    """A short hash of the decoded pixels: the same photo gives the same key whatever its file is called."""
    return hashlib.sha1(np.asarray(image.convert("RGB")).tobytes()).hexdigest()[:16]
