"""A synthetic subject generated on the fly for the offline demo and tests: a red toy with a yellow stripe,
photographed on varied backgrounds. No data from elsewhere is shipped."""

from __future__ import annotations

import random
from pathlib import Path

from PIL import Image, ImageDraw

from dti.core import checks, io
from dti.core.errors import InputError
from dti.offline.cache import cache_root
from dti.train.data import WORD_COLUMNS, Subject, folder_subject, initializer_word


def draw_toy(seed: int, size: int = 96, body=(200, 30, 30), stripe=(240, 210, 40)) -> Image.Image:
    rng = random.Random(seed)
    background = tuple(rng.randint(40, 230) for _ in range(3))
    image = Image.new("RGB", (size, size), background)
    draw = ImageDraw.Draw(image)
    r = size * rng.uniform(0.22, 0.32)
    cx, cy = size * rng.uniform(0.4, 0.6), size * rng.uniform(0.4, 0.6)
    draw.ellipse([cx - r, cy - r, cx + r, cy + r], fill=tuple(body))
    draw.rectangle([cx - r, cy - r / 5, cx + r, cy + r / 5], fill=tuple(stripe))
    return image


def synthetic_subject(num_images: int = 4, subject: str = "toy", subjects: dict | None = None,
                      cache_dir: str | None = None, initializer: str | None = None,
                      words: str = "class_word", load: bool = True) -> Subject:
    """A generated subject from the `subjects` table ({name: {class_word, body, stripe}}), written once into
    the cache folder (`load=False`: checks only, nothing written)."""
    subjects = subjects or {"toy": {"class_word": "toy"}}
    if subject not in subjects:
        raise InputError("data.subject", subject, f"unknown subject (known: {', '.join(sorted(subjects))})")
    checks.integer("data.num_images", num_images, minimum=1, maximum=1000)
    entry = dict(subjects[subject])
    if not load:
        table = {"class_word": entry["class_word"]}
        return Subject(subject, entry["class_word"], initializer_word(
            subject, table, "class_word" if words in WORD_COLUMNS else words, initializer), [])
    colours = {k: entry[k] for k in ("body", "stripe") if k in entry}
    folder = cache_root(cache_dir) / f"synthetic_{subject}_{num_images}"
    for i in range(num_images):
        path = Path(folder) / f"{i:02d}.png"
        if not path.exists():
            io.save_image(path, draw_toy(i, **colours))
    return folder_subject(str(folder), entry["class_word"], subject=subject, initializer=initializer,
                          live=bool(entry.get("live", False)), words=words)
