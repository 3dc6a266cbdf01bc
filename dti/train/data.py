"""The `data=` group: where a subject's images, class word and initializer word come from."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from dti.backbones.images import load_images
from dti.core.errors import InputError


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


INITIALIZER_SOURCES = ("class_word", "initialization")


def dreambooth_subject(root: str, subject: str, subjects: dict, initializer: str | None = None,
                       initializer_source: str = "class_word", initializer_map: str | None = None) -> Subject:
    """`data=dreambooth`: `root/<folder>/*.jpg`, words from the subject table in conf/data/dreambooth.yaml."""
    if subject not in subjects:
        raise InputError("data.subject", subject, f"unknown subject (known: {', '.join(sorted(subjects))})")
    if initializer_source not in INITIALIZER_SOURCES:
        raise InputError("data.initializer_source", initializer_source, f"choose {' or '.join(INITIALIZER_SOURCES)}")
    entry = dict(subjects[subject])
    folder = Path(root) / entry.get("folder", subject)
    if not Path(root).is_dir():
        raise InputError("data.root", str(root), "folder does not exist (download with: python -m dti.tools.download)")
    word = initializer if initializer is not None else entry.get(initializer_source, entry["class_word"])
    if initializer_map:
        words = _read_initializer_map(initializer_map)
        if subject not in words:
            raise InputError("data.initializer_map", str(initializer_map), f"has no word for subject {subject!r}")
        word = words[subject]
    return Subject(
        name=subject, class_word=entry["class_word"], initializer=_initializer(word, entry["class_word"]),
        images=load_images(folder, "data.subject folder"), live=bool(entry.get("live", False)),
    )


def _read_initializer_map(path: str) -> dict[str, str]:
    import json

    try:
        words = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError("data.initializer_map", str(path), f"cannot be read as JSON ({err})") from None
    if not isinstance(words, dict) or not all(isinstance(v, str) for v in words.values()):
        raise InputError("data.initializer_map", str(path), "must be a JSON object {subject: word}")
    return words


def folder_subject(path: str, class_word: str, subject: str | None = None, initializer: str | None = None,
                   live: bool = False, initializer_source: str = "class_word") -> Subject:
    """`data=folder`: any folder of images plus its class word (`initializer_source` is accepted for symmetry
    with data=dreambooth; without a table the initializer is `initializer` or the class word)."""
    if not path:
        raise InputError("data.path", path, "is required for data=folder (a folder of images)")
    if not class_word or not str(class_word).strip():
        raise InputError("data.class_word", class_word, "is required for data=folder")
    name = subject or Path(path).name
    images = load_images(Path(path), "data.path")
    return Subject(name, str(class_word), _initializer(initializer, str(class_word)), images, live)
