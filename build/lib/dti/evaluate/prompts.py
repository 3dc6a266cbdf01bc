"""The `prompts=` group: evaluation prompt sets. A set is a list of templates in which "{}" stands for the
concept: the placeholder for generation, the class word for SigLIP's text side (as the official evaluation does).
Live subjects (cats, dogs) get the live list where a set has one."""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass
from pathlib import Path

from dti.core.errors import InputError


@dataclass
class PromptSet:
    name: str
    templates: list[str]

    def __post_init__(self):
        if not self.templates:
            raise InputError("prompts", self.name, "has no prompts")
        for t in self.templates:
            if t.count("{}") != 1:
                raise InputError("prompts", t, 'each template needs exactly one "{}" where the concept goes')


# A set written for this project in the spirit of the paper's "complex prompts": each combines a style, a
# background, lighting, and an attribute or action.
COMPLEX_OBJECT = [
    "a watercolor painting of a {} on a rainy street at night, with a red umbrella beside it",
    "an oil painting of a {} on a wooden table by a sunlit window, next to a vase of tulips",
    "a pencil sketch of a {} on a park bench in the fog, covered in autumn leaves",
    "a cinematic photo of a {} on a desert road at sunset, casting a long shadow",
    "a Studio Ghibli style illustration of a {} in a flower meadow under a bright blue sky",
    "a neon-lit cyberpunk scene with a {} on a wet sidewalk, reflections of pink signs",
    "a pixel art image of a {} in a snowy forest at dawn, wrapped in a knitted scarf",
    "a black and white film photo of a {} in a busy train station, with motion-blurred commuters",
    "a children's book illustration of a {} floating on a small boat across a calm lake at dusk",
    "a low-poly 3D render of a {} on a floating island, soft morning light, with a rainbow above",
    "a Van Gogh style painting of a {} under a starry night sky, beside a cypress tree",
    "a macro photo of a {} covered in dew drops on green moss, in soft backlight",
    "an ukiyo-e woodblock print of a {} by the sea, with a great wave in the background",
    "a polaroid photo of a {} on a kitchen counter under warm lamp light, next to a cup of coffee",
    "a comic book panel of a {} on a rooftop at midnight, lit by a full moon",
    "a stained glass window depicting a {} in a cathedral, with colored light falling on the floor",
    "a claymation still of a {} on a candy-colored beach, with tiny palm trees",
    "an impressionist painting of a {} in a Paris cafe on a rainy afternoon, next to a croissant",
    "a studio product photo of a {} on a marble pedestal, dramatic rim lighting, with gold confetti",
    "a vintage travel poster of a {} in front of snowy mountains, in bold flat colors",
    "a photo of a {} half buried in the sand of a tropical beach at golden hour, wearing sunglasses",
    "a gothic charcoal drawing of a {} in an abandoned library lit by candles",
]
COMPLEX_LIVE = [
    "a watercolor painting of a {} on a rainy street at night, wearing a red scarf",
    "an oil painting of a {} sleeping by a fireplace in a cozy cabin, wearing a knitted sweater",
    "a pencil sketch of a {} running through a foggy park, chasing autumn leaves",
    "a cinematic photo of a {} on a desert road at sunset, wearing aviator goggles",
    "a Studio Ghibli style illustration of a {} in a flower meadow, chasing a butterfly",
    "a neon-lit cyberpunk scene with a {} on a wet sidewalk, wearing a glowing collar",
    "a pixel art image of a {} in a snowy forest at dawn, wearing a santa hat",
    "a black and white film photo of a {} in a busy train station, sitting on a suitcase",
    "a children's book illustration of a {} rowing a small boat across a calm lake at dusk",
    "a low-poly 3D render of a {} on a floating island in soft morning light, wearing a backpack",
    "a Van Gogh style painting of a {} under a starry night sky, howling at the moon",
    "a macro photo of a {} sniffing a dew-covered flower in soft backlight",
    "an ukiyo-e woodblock print of a {} by the sea, wearing a samurai helmet",
    "a polaroid photo of a {} in a kitchen under warm lamp light, wearing a chef hat",
    "a comic book panel of a {} on a rooftop at midnight, wearing a superhero cape",
    "a renaissance portrait of a {} in a royal palace, wearing a crown and a velvet robe",
    "a claymation still of a {} on a candy-colored beach, building a sandcastle",
    "an impressionist painting of a {} in a Paris cafe on a rainy afternoon, wearing a beret",
    "a studio photo of a {} on a marble pedestal, dramatic rim lighting, wearing a bow tie",
    "a vintage travel poster of a {} skiing down snowy mountains, in bold flat colors",
    "a photo of a {} jumping into a swimming pool at golden hour, wearing sunglasses",
    "a gothic charcoal drawing of a {} reading a book in an abandoned library lit by candles",
]


def complex_prompts(live: bool = False) -> PromptSet:
    return PromptSet("complex", list(COMPLEX_LIVE if live else COMPLEX_OBJECT))


_FORMAT_LINE = re.compile(r"^\s*(['\"].*['\"])\.format\(\s*unique_token\s*,\s*class_token\s*\)\s*,?\s*$")


def dreambooth_prompts(path: str, live: bool = False) -> PromptSet:
    """The 25 object or 25 live prompts of the DreamBooth dataset's prompts_and_classes.txt, with "{}" where the
    dataset puts "unique_token class_token"."""
    path = Path(path)
    if not path.is_file():
        raise InputError("prompts.path", str(path), "file not found (the DreamBooth dataset's prompts_and_classes.txt)")
    text = path.read_text(encoding="utf-8")
    sections = re.split(r"^\s*Live Subject Prompts\s*$", text, flags=re.MULTILINE)
    if len(sections) != 2:
        raise InputError("prompts.path", str(path), "has no 'Live Subject Prompts' section")
    section = sections[1] if live else sections[0].split("Object Prompts", 1)[-1]
    templates = []
    for line in section.splitlines():
        match = _FORMAT_LINE.match(line)
        if match:
            literal = ast.literal_eval(match.group(1))
            templates.append(literal.replace("{0} {1}", "{}"))
    return PromptSet("dreambooth", templates)


def file_prompts(path: str, name: str | None = None, live: bool = False) -> PromptSet:
    """Templates from a text file (one per line; blank lines and #comments skipped) or a JSON file: a list, or
    {"object": [...], "live": [...]}. "{}" marks the concept."""
    path = Path(path)
    if not path.is_file():
        raise InputError("prompts.path", str(path), "file not found")
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise InputError("prompts.path", str(path), f"is not valid JSON ({err})") from None
        if isinstance(data, dict):
            data = data.get("live" if live else "object") or data.get("object") or []
        if not isinstance(data, list) or not all(isinstance(t, str) for t in data):
            raise InputError("prompts.path", str(path),
                             'expected a list of strings or {"object": [...], "live": [...]}')
        templates = data
    else:
        templates = [line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")]
    return PromptSet(name or path.stem, templates)
