"""The one place that turns a composed config into objects. Components below take plain typed arguments."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

from hydra.errors import InstantiationException
from hydra.utils import get_class, instantiate
from omegaconf import DictConfig, OmegaConf

from dti.backbones.base import Backbone
from dti.core import checks
from dti.core.errors import InputError
from dti.core.version import __version__
from dti.evaluate.prompts import PromptSet
from dti.evaluate.sampler import SamplerSettings
from dti.evaluate.scorers import Evaluator
from dti.method.concept import Concept, ConceptEmbedding, add_concept, check_fits
from dti.method.external import ExternalEmbedding, read_external
from dti.method.formats.metadata import RunFacts
from dti.method.magnitude import Magnitude
from dti.method.method import ConceptMethod
from dti.method.optim import MAX_LR
from dti.method.slots import TextEncoderSlot
from dti.offline.random_weights import MODELS as RANDOM_MODELS
from dti.offline.random_weights import load_config, random_pretrained
from dti.offline.tiny import tiny_path
from dti.run.identity import fingerprint
from dti.run.loggers import NullLogger
from dti.train.adapters import AdapterSettings, DenoiserAdapter
from dti.train.data import Subject
from dti.train.schedule import KEYS as SCHEDULE_KEYS
from dti.train.schedule import ScheduleSettings
from dti.train.settings import TrainSettings
from dti.train.templates import TEMPLATES
from dti.train.trainer import Trainer

STAGES = ("train", "sample", "evaluate")

log = logging.getLogger(__name__)


def _instantiate(node, **kwargs):
    """hydra.utils.instantiate, but bad input raised by a target surfaces as itself, not wrapped by Hydra."""
    try:
        return instantiate(node, **kwargs)
    except InstantiationException as err:
        cause = err.__cause__
        while cause is not None and not isinstance(cause, InputError):
            cause = cause.__cause__
        if cause is not None:
            raise cause from None
        raise


def check_scalars(cfg: DictConfig) -> None:
    """The optimizer's own numbers, as the optimizer will get them, before anything is loaded or written: the
    prior strength is checked where it is used (`optimizer.kappa`, which reads the top-level `kappa`)."""
    kappa = OmegaConf.select(cfg, "optimizer.kappa")
    field = "kappa" if OmegaConf.is_interpolation(cfg.optimizer, "kappa") else "optimizer.kappa"
    checks.number(field, kappa, minimum=0, maximum=1e3)
    checks.number("optimizer.lr", OmegaConf.select(cfg, "optimizer.lr"), minimum=0, maximum=MAX_LR, open_min=True)


def _settings(cls, node: DictConfig):
    """A settings dataclass from its config node (typed by the schema; its __post_init__ checks the ranges)."""
    values = OmegaConf.to_container(node, resolve=True)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - known)
    if unknown:
        raise InputError(f"{cls.__name__}", unknown[0], f"unknown setting (known: {', '.join(sorted(known))})")
    return cls(**values)


def subject_names(cfg: DictConfig) -> list[str]:
    """data.subject: one name, a list of names, or "all" (every subject of the data source's table)."""
    value = cfg.data.subject
    if OmegaConf.is_list(value):
        names = [str(v) for v in value]
    elif str(value) == "all":
        if "subjects" not in cfg.data:
            raise InputError("data.subject", "all", "needs a data source with a subject table (data=dreambooth)")
        names = list(cfg.data.subjects)
    else:
        names = [str(value)]
    if not names or len(set(names)) != len(names):
        raise InputError("data.subject", names, "must name at least one subject, each once")
    return names


def build_subjects(cfg: DictConfig) -> list[Subject]:
    """Every subject of the job, images read and checked, before any model is loaded."""
    names = subject_names(cfg)
    if len(names) > 1 and "subjects" not in cfg.data:
        raise InputError("data.subject", names, "a list of subjects needs a subject table (data=dreambooth)")
    return [_instantiate(cfg.data, subject=name) for name in names]


def build_subject(cfg: DictConfig) -> Subject:
    return build_subjects(cfg)[0]


def build_magnitude(cfg: DictConfig) -> Magnitude:
    return _instantiate(cfg.magnitude)


def build_optimizer_factory(cfg: DictConfig):
    """A partial (the parameters come from the concept) of the optimizer node without its schedule keys."""
    values = OmegaConf.to_container(cfg.optimizer, resolve=True)  # kappa reads the top level: resolved here
    return _instantiate(OmegaConf.create({k: v for k, v in values.items() if k not in SCHEDULE_KEYS}))


def build_schedule_settings(cfg: DictConfig) -> ScheduleSettings:
    """optimizer.schedule and optimizer.warmup_steps (an optimizer file without them: constant, no warm-up)."""
    values = OmegaConf.to_container(cfg.optimizer, resolve=True)
    return _settings(ScheduleSettings, OmegaConf.create({k: v for k, v in values.items() if k in SCHEDULE_KEYS}))


def check_compatible(magnitude: Magnitude, optimizer_factory) -> None:
    unit_rows = getattr(optimizer_factory.func, "keeps_unit_rows", None)
    if unit_rows is not None and unit_rows != magnitude.fixed:
        if magnitude.fixed:
            raise InputError("optimizer", optimizer_factory.func.__name__, "learns the norm, so it needs "
                             "magnitude=none (plain TI); with a fixed magnitude use optimizer=rsgd or adamw_proj")
        raise InputError("magnitude", "none", f"{optimizer_factory.func.__name__} keeps rows on the unit sphere; "
                         "it needs a fixed magnitude (mean, min, max, float, init)")


def model_key(cfg: DictConfig) -> str:
    """Jobs with equal keys can share one loaded backbone."""
    return json.dumps(OmegaConf.to_container(cfg.model, resolve=True), sort_keys=True, default=str)


class BackboneCache:
    """The loaded backbone shared by jobs that run one after another in one process (a sweep's jobs under the
    packed launcher, which creates the cache and hands it to each job): jobs with the same model settings get
    the same backbone. One model is kept at a time."""

    def __init__(self):
        self.key: str | None = None
        self.backbone: Backbone | None = None

    def get(self, cfg: DictConfig) -> Backbone:
        key = model_key(cfg)
        if key != self.key:
            self.key = self.backbone = None  # drop the previous model before loading the next
            self.backbone, self.key = _load_backbone(cfg), key
        if any(isinstance(slot.input_embeddings(), ConceptEmbedding) for slot in self.backbone.encoders):
            raise RuntimeError("a shared backbone still carries a concept: the job before did not remove it")
        return self.backbone


def build_backbone(cfg: DictConfig, cache: BackboneCache | None = None) -> Backbone:
    """The configured backbone: loaded, or taken from `cache` when one is given."""
    return cache.get(cfg) if cache is not None else _load_backbone(cfg)


def _load_backbone(cfg: DictConfig) -> Backbone:
    # name is a label; random_init swaps the checkpoint for a random-weight build of the same architecture
    node = OmegaConf.masked_copy(cfg.model, [k for k in cfg.model if k not in ("name", "random_init")])
    if cfg.model.get("random_init"):
        node.pretrained = str(random_pretrained(cfg.model.name))
    log.info("loading %s", cfg.model.name)
    try:
        return _instantiate(node)
    except (InstantiationException, OSError) as err:
        cause = err.__cause__ if isinstance(err, InstantiationException) and err.__cause__ else err
        if not isinstance(cause, OSError):  # missing files, unreachable hub: the user's input; anything else: a bug
            raise
        first_line = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        raise InputError("model.pretrained", cfg.model.get("pretrained", cfg.model.name),
                         f"cannot be loaded ({first_line})") from None


def concept_placeholder(cfg: DictConfig, subject: Subject) -> str:
    return cfg.placeholder or f"<{subject.name}>"


def build_concept(cfg: DictConfig, subject: Subject, backbone: Backbone | None = None,
                  stand_in: str | None = None) -> tuple[Backbone, Concept]:
    """The backbone (loaded unless given: one load serves every subject of a job) with the subject's concept
    token added to every text encoder (`stand_in`: see dti.method.concept.add_concept)."""
    backbone = backbone or build_backbone(cfg)
    method = build_method(cfg)
    initializer = method.initializer_prefix + subject.initializer
    start = build_start_rows(cfg, backbone)
    external = build_external_embedding(cfg, backbone)
    num_vectors = external.num_vectors if external is not None else cfg.num_vectors
    concept = add_concept(backbone.encoders, concept_placeholder(cfg, subject), initializer,
                          build_magnitude(cfg), num_vectors, stand_in, method.init, start)
    for key, table in concept.tables.items():
        source = f"initializer {initializer!r} ({method.init})" if start is None else \
            f"concept.init_from={cfg.concept.init_from} (prior: initializer {initializer!r})"
        log.info("%s: tokens %s from %s, |e| %s", key, concept.tokens, source,
                 [round(x, 4) for x in table.embeddings().norm(dim=-1).tolist()])
    return backbone, concept


def build_start_rows(cfg: DictConfig, backbone: Backbone) -> dict | None:
    """`concept.init_from`'s rows matched to the backbone's encoders, or None (the rows start from the word)."""
    path = cfg.concept.init_from
    return None if path is None else read_external("concept.init_from", path, backbone.encoders).rows


def build_external_embedding(cfg: DictConfig, backbone: Backbone) -> ExternalEmbedding | None:
    """`embeddings=`: the file a run samples and scores instead of trained rows, matched to the encoders."""
    path = cfg.get("embeddings")
    return None if path is None else read_external("embeddings", path, backbone.encoders)


def check_embedding_files(cfg: DictConfig, backbone: Backbone, stages: list[str]) -> None:
    """The embedding files of this run fit the loaded backbone's encoders and the vector count, before any stage
    writes (for every subject of the job at once)."""
    files = {"concept.init_from": cfg.concept.init_from if "train" in stages else None,
             "embeddings": cfg.get("embeddings") if "sample" in stages else None}
    for field, path in files.items():
        count = None if path is None else read_external(field, path, backbone.encoders).num_vectors
        if count is not None and cfg.num_vectors is not None and cfg.num_vectors != count:
            raise InputError("num_vectors", cfg.num_vectors, f"but {field} holds {count} vector(s): drop "
                             "num_vectors (the file decides)")


def build_method(cfg: DictConfig) -> ConceptMethod:
    """What the method contributes besides optimizer and magnitude (dti.method.method)."""
    fields = {f.name for f in dataclasses.fields(ConceptMethod)}
    return ConceptMethod(**{k: v for k, v in OmegaConf.to_container(cfg.method).items() if k in fields})


def build_adapter_settings(cfg: DictConfig) -> AdapterSettings:
    return _settings(AdapterSettings, cfg.adapter)


def build_adapter(cfg: DictConfig, backbone: Backbone) -> DenoiserAdapter | None:
    """The denoiser's adapter of this run (None: adapter=none), added to the loaded backbone's denoiser."""
    settings = build_adapter_settings(cfg)
    return None if settings.kind == "none" else DenoiserAdapter(backbone.denoiser, settings, seed=cfg.seed)


def check_training(cfg: DictConfig) -> TrainSettings:
    """Everything about training that can be checked before a model is loaded."""
    check_scalars(cfg)
    check_compatible(build_magnitude(cfg), build_optimizer_factory(cfg))
    checks.integer("seed", cfg.seed, minimum=0, maximum=2**63 - 1)
    method, adapter = build_method(cfg), build_adapter_settings(cfg)
    if method.objective == "dco" and adapter.kind == "none":
        raise InputError("method.objective", "dco", "compares the model with its adapter off: set adapter=lora")
    settings = _settings(TrainSettings, cfg.train)
    build_schedule_settings(cfg).check_steps(settings.steps)
    return settings


def build_trainer(cfg: DictConfig, run_dir: Path, backbone: Backbone, concept: Concept, subject: Subject,
                  logger=None, adapter: DenoiserAdapter | None = None) -> Trainer:
    settings = check_training(cfg)
    if subject.captions is None:
        check_fits(concept, backbone.encoders, TEMPLATES[settings.templates], "train.templates")
    else:
        log.info("%s: %d per-image captions (data.captions=sidecar); train.templates=%s is not used", subject.name,
                 len(subject.captions), settings.templates)
        check_fits(concept, backbone.encoders, subject.captions, "data.captions")
    if settings.validation.enabled:
        check_fits(concept, backbone.encoders, settings.validation.prompts, "train.validation.prompts")
    optimizer = build_optimizer_factory(cfg)(concept.param_groups())
    return Trainer(backbone, concept, optimizer, subject.images, subject.name, settings, run_dir,
                   logger or NullLogger(), seed=cfg.seed, fingerprint=fingerprint(cfg, subject),
                   method=build_method(cfg), adapter=adapter, captions=subject.captions, masks=subject.masks,
                   schedule=build_schedule_settings(cfg), facts=build_run_facts(cfg, subject))


def concept_trigger(cfg: DictConfig, subject: Subject) -> str:
    """The tool files' name, the word A1111 and ComfyUI prompts use: `<subject>-<method>` unless `trigger`
    (`<subject>-external` for an embedding made elsewhere, `embeddings=FILE`: no method of ours made it)."""
    return cfg.trigger or f"{subject.name}-{'external' if cfg.get('embeddings') else cfg.method.name}"


def build_run_facts(cfg: DictConfig, subject: Subject) -> RunFacts:
    return RunFacts(method=cfg.method.name, trigger=concept_trigger(cfg, subject), kappa=cfg.optimizer.kappa,
                    steps=cfg.train.steps, base_model=str(cfg.model.get("pretrained") or cfg.model.name),
                    resolution=OmegaConf.to_container(cfg.train).get("resolution"), version=__version__)


def check_resolutions(cfg: DictConfig, backbone: Backbone, stages: list[str]) -> None:
    """Image sizes the loaded backbone can take, checked before any stage writes anything."""
    multiple = backbone.resolution_multiple
    sizes = []
    if "train" in stages:
        train = check_training(cfg)
        sizes += [("train.resolution", train.resolution), *(("train.validation.resolution", x)
                                                            for x in train.validation.size())]
    if "sample" in stages:
        sizes += [("sampler.height", cfg.sampler.height), ("sampler.width", cfg.sampler.width)]
    for field, value in sizes:
        if value % multiple:
            raise InputError(field, value, f"must be a multiple of {multiple} for {cfg.model.name}")


def check_stages(cfg: DictConfig) -> list[str]:
    stages = list(cfg.stage) if OmegaConf.is_list(cfg.stage) else [str(cfg.stage)]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise InputError("stage", stages, f"choose one or more of {', '.join(STAGES)}, e.g. stage=[sample,evaluate]")
    return [s for s in STAGES if s in stages]  # always in pipeline order


def build_sampler_settings(cfg: DictConfig) -> SamplerSettings:
    return _settings(SamplerSettings, cfg.sampler)


def build_prompt_set(cfg: DictConfig, subject: Subject) -> PromptSet:
    return _instantiate(cfg.prompts)(live=subject.live)


def build_evaluator(cfg: DictConfig) -> Evaluator:
    return _instantiate(cfg.evaluator)


def run_tags(cfg: DictConfig) -> list[str]:
    """model, method, optimizer, magnitude and kappa of a run, for grouping on dashboards."""
    def short(target: str) -> str:
        return target.rsplit(".", 1)[-1]

    magnitude = OmegaConf.select(cfg, "magnitude.statistic") or short(cfg.magnitude._target_)
    return [f"model={cfg.model.name}", f"method={cfg.method.name}", f"optimizer={short(cfg.optimizer._target_)}",
            f"magnitude={magnitude}", f"kappa={cfg.optimizer.kappa}"]


def build_logger(cfg: DictConfig, run_dir: Path, stages: list[str] | None = None, subject: str | None = None):
    factory = _instantiate(cfg.logger)  # a partial: the run directory and the resolved config come from here
    return factory(run_dir=str(run_dir), run_config=OmegaConf.to_container(cfg, resolve=True),
                   job_type="+".join(stages or ["train"]), default_tags=run_tags(cfg))


def embedding_encoders(cfg: DictConfig) -> list[TextEncoderSlot]:
    """The model's text encoders as embedding files see them (key, row width, diffusers file), without loading
    any weights: the widths come from the checkpoint folder's text encoder configs, or for a hub model from its
    published architecture configs (dti/offline/archs)."""
    model = cfg.model
    adapter = get_class(model.get("adapter") or model._target_)
    folder = None
    if model.get("tiny_name"):
        folder = tiny_path(model.tiny_name, model.get("cache_dir"))
    elif model.get("pretrained") and Path(model.pretrained).is_dir():
        folder = Path(model.pretrained)
    elif model.name not in RANDOM_MODELS:
        raise InputError("model.pretrained", model.get("pretrained"), "is neither a local checkpoint folder nor a "
                         f"model with published architecture configs ({', '.join(RANDOM_MODELS)})")
    slots = []
    for key, subfolder, diffusers_file in adapter.layout(model.get("encoder_key")):
        if folder is not None:
            config = json.loads((folder / subfolder / "config.json").read_text())
        else:
            config = load_config(RANDOM_MODELS[model.name].modules[subfolder][3])
        width = config.get("hidden_size") or config["d_model"]  # CLIP, Gemma-2 / UMT5
        slots.append(TextEncoderSlot(key, None, None, diffusers_file, 0, dim=int(width)))
    return slots
