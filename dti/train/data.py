"""The `data=` group: where a subject's images, class word and initializer word come from.

The initializer word (its embedding starts the concept and gives its prior direction μ) is `data.initializer` when
given, else the subject table's column named by `data.words`: `class_word` (the dataset's class word),
`initialization` (the official DTI code's initialization words, e.g. "red backpack"), `qwen_vl` (the Qwen-VL 2.5
words of the paper's Table 6), or a JSON file {subject: word} of your own.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from PIL import Image

from dti.backbones.images import image_files, load_images
from dti.core.errors import InputError
from dti.train.annotations import check_caption_source, check_masks, read_captions, read_masks

log = logging.getLogger(__name__)


@dataclass
class Subject:
    name: str
    class_word: str
    initializer: str  # the word whose embedding initialises the concept and gives its prior direction μ
    images: list[Image.Image]
    live: bool = False  # DreamBooth's "live subject" (cats, dogs) use the live prompt set in evaluation
    image_names: list[str] = field(default_factory=list)  # each photo's file name without suffix (masks match it)
    captions: list[str] | None = None  # one prompt template per photo ("{0}" the concept); None: train.templates
    masks: list[Image.Image] | None = None  # one loss mask per photo (mode L, its size, white = subject)


WORD_COLUMNS = ("class_word", "initialization", "qwen_vl")  # the columns of the DreamBooth subject table


def initializer_word(subject: str, entry: dict, words: str, initializer: str | None) -> str:
    """The initializer of `subject` (its table row `entry`): `initializer`, else the `words` column or file."""
    if initializer is not None:
        word = str(initializer)
    elif str(words).endswith(".json") or "/" in str(words):
        table = _read_words_file(words)
        if subject not in table:
            raise InputError("data.words", str(words), f"has no word for subject {subject!r}")
        word = table[subject]
    elif words in entry:
        word = str(entry[words])
    else:
        columns = sorted(k for k, v in entry.items() if isinstance(v, str))
        raise InputError("data.words", words, f"is not a column of the subject table ({', '.join(columns)}) "
                                              "nor a JSON file {subject: word}")
    if not word.strip():
        raise InputError("data.initializer", word, "is empty")
    return word


def _read_words_file(path: str) -> dict[str, str]:
    try:
        words = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError("data.words", str(path), f"cannot be read as JSON ({err})") from None
    if not isinstance(words, dict) or not all(isinstance(v, str) for v in words.values()):
        raise InputError("data.words", str(path), "must be a JSON object {subject: word}")
    return words


def photo_fields(folder: Path, field: str, name: str, class_word: str, captions: str, masks: str | None,
                 load: bool) -> dict:
    """The Subject fields a folder of photos gives: the photos, their names, captions and masks (see
    dti.train.annotations). `load=False`: every check that reads no pixel (captions are read)."""
    check_caption_source(captions)
    paths = image_files(folder)
    check_masks(masks, name, paths)
    templates = read_captions(paths, class_word) if captions == "sidecar" else None
    if not load:
        return {"images": [], "image_names": [p.stem for p in paths], "captions": templates}
    images, alphas = load_images(folder, field, with_alpha=True)
    return {"images": images, "image_names": [p.stem for p in paths], "captions": templates,
            "masks": read_masks(masks, name, paths, images, alphas)}


def dreambooth_subject(root: str, subject: str, subjects: dict, initializer: str | None = None,
                       words: str = "class_word", load: bool = True, captions: str = "templates",
                       masks: str | None = None) -> Subject:
    """`data=dreambooth`: `root/<folder>/*.jpg`, words from the subject table in conf/data/dreambooth.yaml.
    `load=False`: every check but reading the images (they stay empty)."""
    if subject not in subjects:
        raise InputError("data.subject", subject, f"unknown subject (known: {', '.join(sorted(subjects))})")
    entry = dict(subjects[subject])
    if not Path(root).is_dir():
        raise InputError("data.root", str(root), "folder does not exist (download with: python -m dti.download)")
    word = initializer_word(subject, entry, words, initializer)
    folder = Path(root) / entry.get("folder", subject)
    if not folder.is_dir():
        raise InputError("data.subject folder", str(folder), "folder does not exist")
    return Subject(name=subject, class_word=entry["class_word"], initializer=word, live=bool(entry.get("live", False)),
                   **photo_fields(folder, "data.subject folder", subject, entry["class_word"], captions, masks, load))


def folder_subject(path: str, class_word: str, subject: str | None = None, initializer: str | None = None,
                   live: bool = False, words: str = "class_word", load: bool = True, captions: str = "templates",
                  masks: str | None = None) -> Subject:
    """`data=folder`: any folder of images plus its class word. Without a table, `words` other than class_word (a
    recipe's initialization words) fall back to the class word, said once in the log."""
    if not path:
        raise InputError("data.path", path, "is required for data=folder (a folder of images)")
    if not class_word or not str(class_word).strip():
        raise InputError("data.class_word", class_word, "is required for data=folder")
    name = subject or Path(path).name
    entry = {"class_word": str(class_word)}
    if words in WORD_COLUMNS and words not in entry and initializer is None:
        if load:
            log.info("data.words=%s: data=folder has no such words; the initializer is the class word %r", words,
                     class_word)
        words = "class_word"
    if not Path(path).is_dir():
        raise InputError("data.path", str(path), "folder does not exist")
    return Subject(name, str(class_word), initializer_word(name, entry, words, initializer), live=live,
                   **photo_fields(Path(path), "data.path", name, str(class_word), captions, masks, load))
