"""The config schema, registered with Hydra's ConfigStore as `dti_schema` (the base of conf/launch.yaml): every
top-level key with its type, and the typed `train:` and `sampler:` nodes. An unknown key (`+kapa=0`) or a value of
the wrong type (`seed=abc`) is refused when the config is composed. The group nodes (model, data, optimizer,
...) differ per option; their targets check their own arguments."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from hydra.core.config_store import ConfigStore

from dti.evaluate.sampler import SamplerSettings
from dti.train.adapters import AdapterSettings
from dti.train.settings import TrainSettings


@dataclass
class MethodInfo:
    """The `method:` node: its name and label, and what it contributes besides its optimizer and magnitude
    (dti.method.method.ConceptMethod: initial rows, anchor penalty, objective)."""

    name: str = "dti"  # the method file's name (conf/method/<name>.yaml): the report keys paper rows by it
    label: str = "DTI"  # how reports name it
    init: str = "word"  # word | encoder_output (CrossInit)
    anchor: float = 0.0  # λ·mean((E − E₀)²) per encoder (CrossInit: 1e-5)
    objective: str = "mse"  # mse | dco
    dco_beta: float = 1000.0
    train_embedding: bool = True
    initializer_prefix: str = ""  # words before the initializer, e.g. "sks " (OFT only)


@dataclass
class ConceptSettings:
    """The `concept:` node: where the concept's rows start, when not from the initializer word."""

    # an embedding file (diffusers, A1111, kohya, or a dti run's embeddings/ folder or run directory) to start
    # training from: a fixed-norm method keeps its direction at the method's own m*, TI keeps the rows as they
    # are; the number of vectors is the file's; the initializer word still anchors the vMF prior
    init_from: str | None = None


@dataclass
class LaunchConfig:
    stage: Any = field(default_factory=lambda: ["train", "sample", "evaluate"])  # one stage, or a list of them
    seed: int = 42
    kappa: float = 1.0e-4
    placeholder: str | None = None
    trigger: str | None = None  # the tool files' name (A1111 / ComfyUI's word); None: <subject>-<method name>, or
    # <subject>-external for embeddings=FILE
    num_vectors: int | None = None
    label: str | None = None  # the run's row in reports; None: the method's label (embeddings=: the file's)
    embeddings: str | None = None  # sample and score this embedding file instead of a trained one (no train stage)
    recipe: str = "official"
    sweep_name: str = "default"
    pack: int = 1  # concepts per batch (dti.run.packing): a job's subjects, or the concepts of a sweep's jobs
    wait_for_lock: bool = False  # another process holds the run directory: wait for it instead of stopping
    method: MethodInfo = field(default_factory=MethodInfo)
    concept: ConceptSettings = field(default_factory=ConceptSettings)
    train: TrainSettings = field(default_factory=TrainSettings)
    sampler: SamplerSettings = field(default_factory=SamplerSettings)
    adapter: AdapterSettings = field(default_factory=AdapterSettings)
    model: Any = None
    data: Any = None
    optimizer: Any = None
    magnitude: Any = None
    prompts: Any = None
    evaluator: Any = None
    logger: Any = None


def register_schema(schema: type = LaunchConfig) -> None:
    """Make `schema` the base of conf/launch.yaml. Commands with settings of their own (python -m dti.bench)
    register a subclass that adds their node."""
    ConfigStore.instance().store(name="dti_schema", node=schema)
