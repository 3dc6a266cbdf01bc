"""Image loading, the one preprocessing every backbone shares (resize shorter side, centre crop), and a content
key per image."""

from __future__ import annotations

import hashlib
import logging
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageOps

from dti.core.errors import InputError, NonFiniteError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp"}

log = logging.getLogger(__name__)


MIN_SIDE = 32  # below this a photo carries no detail of the subject: refused


def decode(image: Image.Image, where: str) -> tuple[Image.Image, Image.Image | None]:
    """(RGB image, alpha channel or None). 16-bit greyscale (mode I;16, I) is scaled to 8 bits, not clipped to
    white; transparency (RGBA, LA, P with a transparent colour) is composited on white and its alpha returned;
    modes that cannot be shown as RGB (32-bit float) are refused by name."""
    image = ImageOps.exif_transpose(image)  # phone photos store rotation in EXIF
    mode = image.mode
    if mode.startswith("I;16") or mode == "I":
        array = np.asarray(image, dtype=np.float64)
        if array.max() > 65535 or array.min() < 0:
            raise InputError("image", where, f"mode {mode} with values outside 0..65535 is not supported")
        scale = 257.0 if mode.startswith("I;16") or array.max() > 255 else 1.0
        return Image.fromarray((array / scale).round().clip(0, 255).astype(np.uint8)).convert("RGB"), None
    if mode == "F":
        raise InputError("image", where, "32-bit float images are not supported; save it as an 8- or 16-bit PNG")
    if mode == "P" and "transparency" in image.info or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = image.convert("RGBA")
        alpha = rgba.getchannel("A")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB"), alpha
    return image.convert("RGB"), None  # convert() forces a full decode: truncated files fail here


def image_files(folder: Path) -> list[Path]:
    """The image files of a folder, sorted by name."""
    return sorted(p for p in Path(folder).iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) \
        if Path(folder).is_dir() else []


def load_images(folder: Path, field: str, with_alpha: bool = False):
    """Every image in `folder` (sorted by name), fully decoded, RGB (see `decode`). Bad input raises `InputError`
    naming `field`. With `with_alpha`, also each image's alpha channel (None where it has none)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(field, str(folder), "folder does not exist")
    paths = image_files(folder)
    if not paths:
        raise InputError(field, str(folder), f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) in folder")
    images, alphas, transparent = [], [], []
    for path in paths:
        try:
            with Image.open(path) as im:
                rgb, alpha = decode(im, str(path))
        except InputError as err:
            raise InputError(field, str(path), err.problem) from None
        except Exception as err:  # PIL raises many types for corrupt data
            raise InputError(field, str(path), f"unreadable image ({type(err).__name__}: {err})") from None
        if min(rgb.size) < MIN_SIDE:
            raise InputError(field, str(path), f"is {rgb.size[0]}x{rgb.size[1]} pixels; photos need at least "
                                               f"{MIN_SIDE} on the shorter side")
        if alpha is not None:
            transparent.append(path.name)
        images.append(rgb)
        alphas.append(alpha)
    if transparent:
        log.warning("%s: %d image(s) with transparency composited on white (%s); data.masks=alpha uses the alpha "
                    "as a loss mask", folder, len(transparent), ", ".join(transparent[:5]))
    return (images, alphas) if with_alpha else images


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


def resize_shorter(image: Image.Image, resolution: int) -> tuple[torch.Tensor, tuple[int, int]]:
    """(C, H, W) tensor in [-1, 1] of the image resized so its shorter side is `resolution`, and the original
    (height, width)."""
    w, h = image.size
    scale = resolution / min(w, h)
    new_w, new_h = max(resolution, math.ceil(w * scale - 1e-6)), max(resolution, math.ceil(h * scale - 1e-6))
    array = np.asarray(image.resize((new_w, new_h), Image.Resampling.BICUBIC), dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1).contiguous(), (h, w)


def to_pil(images: torch.Tensor) -> list[Image.Image]:
    """(N, C, H, W) in [-1, 1] -> PIL images; non-finite pixels are refused, never written as black."""
    if not torch.isfinite(images).all():
        raise NonFiniteError("the decoded images are not finite (NaN or inf): nothing was saved")
    array = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
    return [Image.fromarray(a) for a in array]



def image_key(image: Image.Image) -> str:
    """A short hash of the decoded pixels: the same photo gives the same key whatever its file is called."""
    return hashlib.sha1(np.asarray(image.convert("RGB")).tobytes()).hexdigest()[:16]
