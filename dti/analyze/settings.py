"""The analyses' settings: the typed `analyze:` node of conf/analyze.yaml (AnalyzeSettings, checked when built) and
the top-level `runs:` list, on top of launch.yaml's schema, so `model=`, `sampler.*` and every group work as for
training."""

from __future__ import annotations

from dataclasses import dataclass, field

from dti.core import checks
from dti.core.errors import InputError
from dti.run.schema import LaunchConfig

BLENDS = ("slerp", "lerp", "nslerp")
PAPER_RATIOS = [0.0, 0.35, 0.40, 0.45, 0.50, 0.55, 0.60, 0.65, 1.0]  # Figures 4 and 15


@dataclass
class ProbeSettings:
    """The position probe (Figure 2): a 2-layer MLP from LN(e + p) to the position of the token."""

    steps: int = 300
    batch_size: int = 256
    hidden: int = 256
    lr: float = 1.0e-3
    scales: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0, 16.0])  # e scaled by m
    norms: list[float] = field(default_factory=lambda: [2.0, 4.0, 8.0, 16.0])  # official: |e| = s at position 0
    eval_tokens: int = 512  # vocabulary tokens the accuracies are measured on

    def __post_init__(self):
        checks.integer("analyze.probe.steps", self.steps, minimum=1, maximum=10**6)
        checks.integer("analyze.probe.batch_size", self.batch_size, minimum=1, maximum=10**5)
        checks.integer("analyze.probe.hidden", self.hidden, minimum=1, maximum=10**5)
        checks.number("analyze.probe.lr", self.lr, minimum=0, maximum=10, open_min=True)
        checks.integer("analyze.probe.eval_tokens", self.eval_tokens, minimum=1, maximum=10**6)
        for name in ("scales", "norms"):
            values = getattr(self, name)
            if not values:
                raise InputError(f"analyze.probe.{name}", list(values), "must list at least one value")
            for value in values:
                checks.number(f"analyze.probe.{name}", value, minimum=0, maximum=1e4, open_min=True)


@dataclass
class AnalyzeSettings:
    out: str | None = None  # the output folder; None: analysis/<analysis>
    query: list[str] = field(default_factory=lambda: ["apple", "study", "writing"])  # neighbours of these words
    top_k: int = 5
    related: list[str] = field(default_factory=list)  # drift: words besides the initializer
    prompt: str = "a photo of a {}"  # angles: where the concept token sits
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    ratios: list[float] = field(default_factory=lambda: list(PAPER_RATIOS))
    ratio: float | None = None  # interpolate: write the blend at this ratio as an embedding folder, no images
    blend: str = "slerp"  # slerp | lerp | nslerp
    placeholder: str = "<blend>"  # the blended concept's token
    magnitudes: list[float] = field(default_factory=lambda: [0.5, 1.0, 2.0, 4.0, 8.0])
    relative: bool = True  # magnitudes are multiples of each encoder's vocabulary mean norm (else absolute norms)
    prompts: list[str] | None = None  # rendering prompts with "{}" per concept; None: each analysis's default

    def __post_init__(self):
        checks.integer("analyze.top_k", self.top_k, minimum=1, maximum=1000)
        checks.choice("analyze.blend", self.blend, BLENDS)
        if self.prompt.count("{}") != 1:
            raise InputError("analyze.prompt", self.prompt, 'must hold one "{}" where the concept goes')
        if not self.ratios:
            raise InputError("analyze.ratios", list(self.ratios), "must list at least one ratio")
        for value in self.ratios:
            checks.number("analyze.ratios", value, minimum=0, maximum=1)
        if self.ratio is not None:
            checks.number("analyze.ratio", self.ratio, minimum=0, maximum=1)
        if not self.magnitudes:
            raise InputError("analyze.magnitudes", list(self.magnitudes), "must list at least one value")
        for value in self.magnitudes:
            checks.number("analyze.magnitudes", value, minimum=0, maximum=1e4, open_min=True)
        if not self.placeholder or any(c.isspace() for c in self.placeholder):
            raise InputError("analyze.placeholder", self.placeholder, "must be one word without spaces")
        if self.prompts is not None and not list(self.prompts):
            raise InputError("analyze.prompts", list(self.prompts), "must list at least one prompt (or be null)")


@dataclass
class AnalyzeConfig(LaunchConfig):
    """python -m dti.analyze's schema: launch.yaml's, plus `runs:` and `analyze:`."""

    runs: list[str] = field(default_factory=list)
    analyze: AnalyzeSettings = field(default_factory=AnalyzeSettings)
