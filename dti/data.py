"""The `data=` group: where a subject's images, class word and initializer word come from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from dti.errors import InputError
from dti.images import load_images


@dataclass
class Subject:
    name: str
    class_word: str
    initializer: str  # the word whose embedding initialises the concept and gives its prior direction μ
    images: list[Image.Image]
    live: bool = False  # DreamBooth's "live subject" (cats, dogs) use the live prompt set in evaluation


def _initializer(initializer: str | None, class_word: str) -> str:
    word = class_word if initializer is None else str(initializer)
    if not word.strip():
        raise InputError("data.initializer", word, "is empty")
    return word


def dreambooth_subject(root: str, subject: str, subjects: dict, initializer: str | None = None) -> Subject:
    """`data=dreambooth`: `root/<folder>/*.jpg`, class words from the subject table in conf/data/dreambooth.yaml."""
    if subject not in subjects:
        raise InputError("data.subject", subject, f"unknown subject (known: {', '.join(sorted(subjects))})")
    entry = dict(subjects[subject])
    folder = Path(root) / entry.get("folder", subject)
    if not Path(root).is_dir():
        raise InputError("data.root", str(root), "folder does not exist (download with: python -m dti.download)")
    return Subject(
        name=subject, class_word=entry["class_word"],
        initializer=_initializer(initializer if initializer is not None else entry.get("initializer"),
                                 entry["class_word"]),
        images=load_images(folder, "data.subject folder"), live=bool(entry.get("live", False)),
    )


def folder_subject(path: str, class_word: str, subject: str | None = None, initializer: str | None = None,
                   live: bool = False) -> Subject:
    """`data=folder`: any folder of images plus its class word."""
    if not path:
        raise InputError("data.path", path, "is required for data=folder (a folder of images)")
    if not class_word or not str(class_word).strip():
        raise InputError("data.class_word", class_word, "is required for data=folder")
    name = subject or Path(path).name
    images = load_images(Path(path), "data.path")
    return Subject(name, str(class_word), _initializer(initializer, str(class_word)), images, live)
