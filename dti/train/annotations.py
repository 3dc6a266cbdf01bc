"""What a subject's photos carry besides their pixels: per-image captions (`data.captions=sidecar`) and loss masks
(`data.masks=alpha` or a folder of mask images), read and checked before any model is loaded.

A caption is the first line of the photo's side file (`photo1.jpg` + `photo1.txt`, as kohya's and OneTrainer's
scripts read it). The concept goes where the caption says `{}`; a caption without `{}` puts it in place of the
first whole-word occurrence of the class word ("a dog on the beach" -> "a <dog> on the beach"), the way the
training templates name the concept. A mask is a greyscale image of the photo's size, white = subject; values in
between weight their pixels in between.
"""

from __future__ import annotations

import re
from pathlib import Path

from PIL import Image, ImageOps

from dti.backbones.images import IMAGE_SUFFIXES
from dti.core.errors import InputError

CAPTION_SOURCES = ("templates", "sidecar")
MARKER = "{}"
ASPECT_TOLERANCE = 0.01  # a mask of another size is resized to its photo when their shapes agree this closely


def check_caption_source(captions: str) -> None:
    if captions not in CAPTION_SOURCES:
        raise InputError("data.captions", captions, f"choose one of {', '.join(CAPTION_SOURCES)}")


def caption_template(text: str, class_word: str, where: str) -> str:
    """The caption as a prompt template: every `{}`, else the first whole-word class word, becomes the concept
    (`{0}`, so several markers all take it); any other brace is kept as text."""
    def escaped(part: str) -> str:
        return part.replace("{", "{{").replace("}", "}}")

    if MARKER in text:
        return "{0}".join(escaped(part) for part in text.split(MARKER))
    found = re.search(rf"(?<!\w){re.escape(class_word)}(?!\w)", text, flags=re.IGNORECASE)
    if found is None:
        raise InputError("data.captions", where, f'names neither "{{}}" nor the class word {class_word!r}: '
                         "mark where the concept goes")
    return escaped(text[:found.start()]) + "{0}" + escaped(text[found.end():])


def read_captions(images: list[Path], class_word: str) -> list[str]:
    """One prompt template per photo, from its side file `<stem>.txt` (first line, UTF-8, a BOM allowed)."""
    templates = []
    for image in images:
        side = image.with_suffix(".txt")
        if not side.is_file():
            raise InputError("data.captions", str(side), f"is missing: data.captions=sidecar needs a caption "
                             f"file beside every photo ({image.name})")
        try:
            lines = side.read_text(encoding="utf-8-sig").splitlines()
        except (OSError, UnicodeDecodeError) as err:
            raise InputError("data.captions", str(side), f"cannot be read as UTF-8 text ({err})") from None
        first = lines[0].strip() if lines else ""
        if not first:
            raise InputError("data.captions", str(side), "has no caption on its first line")
        templates.append(caption_template(first, class_word, str(side)))
    return templates


def mask_folder(masks: str, subject: str) -> Path:
    """`<masks>/<subject>/` when there is one (a folder for many subjects), else `<masks>/`."""
    root = Path(str(masks)).expanduser()
    if not str(masks).strip() or not root.is_dir():
        raise InputError("data.masks", masks, "is neither null, alpha nor an existing folder of mask images")
    return root / subject if (root / subject).is_dir() else root


def mask_files(masks: str, subject: str, images: list[Path]) -> list[Path]:
    """The mask file of each photo: the same stem, any image suffix, in the mask folder."""
    folder = mask_folder(masks, subject)
    by_stem = {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES}
    missing = [p.name for p in images if p.stem not in by_stem]
    if missing:
        raise InputError("data.masks", str(folder / missing[0]), f"no mask for this photo ({len(missing)} of "
                         f"{len(images)} photos have none; a mask has the photo's name, any image suffix)")
    return [by_stem[p.stem] for p in images]


def check_masks(masks: str | None, subject: str, images: list[Path]) -> None:
    """Without reading a pixel: the setting, and (a folder) a mask file for every photo."""
    if masks is not None and masks != "alpha":
        mask_files(masks, subject, images)


def read_masks(masks: str | None, subject: str, images: list[Path], photos: list[Image.Image],
               alphas: list[Image.Image | None]) -> list[Image.Image] | None:
    """Each photo's mask (mode L, the photo's size), None without masks. `alphas`: the photos' alpha channels."""
    if masks is None:
        return None
    if masks == "alpha":
        found = []
        for path, alpha in zip(images, alphas):
            if alpha is None:
                raise InputError("data.masks", str(path), "has no alpha channel (data.masks=alpha)")
            found.append(_checked(alpha, path))
        return found
    found = []
    for path, file, photo in zip(images, mask_files(masks, subject, images), photos):
        try:
            with Image.open(file) as im:
                mask = ImageOps.exif_transpose(im).convert("L")
        except Exception as err:  # PIL raises many types for corrupt data
            raise InputError("data.masks", str(file), f"unreadable image ({type(err).__name__}: {err})") from None
        if mask.size != photo.size:
            (w, h), (pw, ph) = mask.size, photo.size
            if abs(w / h - pw / ph) > ASPECT_TOLERANCE * pw / ph:
                raise InputError("data.masks", str(file), f"is {w}x{h}, its photo {path.name} {pw}x{ph}: another "
                                 "shape")
            mask = mask.resize(photo.size, Image.Resampling.BILINEAR)
        found.append(_checked(mask, file))
    return found


def _checked(mask: Image.Image, where: Path) -> Image.Image:
    if mask.getextrema()[1] == 0:
        raise InputError("data.masks", str(where), "is black everywhere: no subject pixel to train on")
    return mask
