"""What a run directory is, and when its outputs are complete: one rule for names, fingerprints and completeness.

Every key of the composed config is classified once, below: CONCEPT_KEYS define the trained concept, the rest
(OTHER_KEYS: how a run executes, logs, validates, samples and scores) do not. A test checks that every key of
every config is in exactly one of the two.
- The run directory's name is the command line's overrides of CONCEPT_KEYS (`outputs/<name>/<subject>`); values
  that are paths (they contain "/") stay out of names, except those of FILE_KEYS (embedding files), which are
  named by their stem and the start of their content's sha256 (`embeddings=civitai_dog~1a2b3c4d`).
- The fingerprint recorded in every checkpoint and in done.json is the resolved value of every concept key (paths
  included; `train.steps` excepted, so a run may be extended; FILE_KEYS by their content's sha256, so a moved
  file is the same input and an edited one another), the subject's images and its initializer word, and its
  captions and loss masks when it has them (by content: `data.captions` and `data.masks` name where they come
  from, the fingerprint records what they are): a resume or a "complete" run made from anything else is refused
  instead of silently reused.
- Samples are identified by the settings each image depends on and the embeddings' checksum (`sampler.json`),
  scores by the evaluator settings (`metrics.json`). `status.json` says how the last attempt ended.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import traceback
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dti.backbones.images import image_key
from dti.core import io
from dti.core.io import read_json
from dti.method.external import content_sha256, name_part
from dti.train.data import Subject

# a key, or a prefix with ".*" for every key below it; group choices (`method=ti`) are keys too
CONCEPT_KEYS = (
    "method", "method.name", "method.init", "method.anchor", "method.objective", "method.dco_beta",
    "method.train_embedding", "method.initializer_prefix", "recipe", "experiment", "words", "adapter", "adapter.*",
    "optimizer", "optimizer.*", "magnitude", "magnitude.*", "kappa", "placeholder", "trigger", "num_vectors",
    "seed",
    "train.steps", "train.batch_size", "train.grad_accum", "train.resolution", "train.templates", "train.crop",
    "train.random_flip", "train.sample_latents",
    "model", "model._target_", "model.pretrained", "model.revision", "model.variant", "model.vae", "model.adapter",
    "model.tiny_name", "model.random_init", "model.max_sequence_length", "model.complex_human_instruction",
    "model.instruction_stages", "model.zero_pad_scale", "model.zero_pad_max", "model.train_shift",
    "model.pooling", "model.encoder_key", "model.single_file_config",
    "data.initializer", "data.words", "data.num_images", "data.captions", "data.masks",
    "concept", "concept.init_from", "embeddings",
)
FILE_KEYS = ("concept.init_from", "embeddings")  # embedding files: identified by their contents
OTHER_KEYS = (
    "stage", "label", "sweep_name", "pack", "wait_for_lock", "method.label",
    "train.log_every", "train.checkpoint_every", "train.keep_checkpoints", "train.resume", "train.validation.*",
    "model.name", "model.device", "model.dtype", "model.vae_dtype", "model.compile", "model.batch_cfg",
    "model.gradient_checkpointing",
    "model.cache_dir", "model.negative_prompt",
    "data", "data._target_", "data.root", "data.path", "data.subject", "data.cache_dir", "data.class_word",
    "data.live", "data.subjects.*",
    "sampler", "sampler.*", "prompts", "prompts.*", "evaluator", "evaluator.*", "logger", "logger.*",
)
# group choices; the run's length; where captions and masks come from (the fingerprint has their contents)
NOT_IN_FINGERPRINT = ("method", "experiment", "optimizer", "magnitude", "model", "train.steps", "data.captions",
                      "data.masks")


def _matches(key: str, patterns: tuple[str, ...]) -> bool:
    return any(key == p or (p.endswith(".*") and key.startswith(p[:-1])) or fnmatch.fnmatchcase(key, p)
               for p in patterns)


def is_concept_key(key: str) -> bool:
    return _matches(key.lstrip("+~"), CONCEPT_KEYS)


def flatten(node, prefix: str = "") -> dict:
    """{dotted key: leaf value} of a plain (resolved) config container."""
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            out.update(flatten(value, f"{prefix}{key}."))
        return out or {prefix[:-1]: {}}
    return {prefix[:-1]: node}


MAX_VALUE = 40  # longer values are shortened in names (a folder name has at most 255 bytes)


def run_name(overrides) -> str:
    """The run directory's name from the command line's overrides: those of concept keys whose values are not
    paths, sorted (a long value shortened to its start and a hash); "default" when there are none."""
    kept = {}
    for override in overrides:  # a key given twice counts once, with its last value (as Hydra applies it)
        key, _, value = str(override).partition("=")
        if key.lstrip("+~") in FILE_KEYS and value not in ("", "null"):
            quoted = len(value) > 1 and value[0] == value[-1] and value[0] in "'\""  # a path with = or , in it
            kept[key] = f"{key}={name_part(value[1:-1] if quoted else value)}"
        elif is_concept_key(key) and "/" not in value:
            if len(value) > MAX_VALUE:
                value = f"{value[:24]}~{hashlib.sha1(value.encode()).hexdigest()[:8]}"
            kept[key] = f"{key}={value}"
        elif is_concept_key(key):
            kept.pop(key, None)
    return ",".join(sorted(kept.values())) or "default"


def concept_settings(cfg: DictConfig) -> dict:
    """The resolved values of the concept keys (what the fingerprint records)."""
    flat = flatten(OmegaConf.to_container(cfg, resolve=True))
    for key in FILE_KEYS:  # unset, they are left out: runs made before these keys existed keep their fingerprint
        if flat.get(key) is None:
            flat.pop(key, None)
        else:
            flat[key] = f"sha256:{content_sha256(flat[key])}"
    return {k: v for k, v in sorted(flat.items()) if _matches(k, CONCEPT_KEYS) and k not in NOT_IN_FINGERPRINT}


def fingerprint(cfg: DictConfig, subject: Subject) -> dict:
    """What a training run's outputs depend on beyond its directory name: every concept setting (see the module's
    docstring), the subject's images and the initializer, and its captions and masks where it has them."""
    annotations = {}
    if subject.captions is not None:
        text = json.dumps(subject.captions, ensure_ascii=False).encode()
        annotations["captions"] = hashlib.sha1(text).hexdigest()[:16]
    if subject.masks is not None:
        annotations["masks"] = [image_key(m) for m in subject.masks]
    return {"settings": concept_settings(cfg), "images": [image_key(im) for im in subject.images],
            "initializer": subject.initializer, **annotations}


def is_complete(directory: Path, stages: list[str], tag: str | None, expected_images: int, fingerprint: dict,
                sampler: dict | None, evaluator: dict | None, steps: int) -> bool:
    """Are the outputs of the requested stages there, complete, and made from these inputs and settings?"""
    done = read_json(directory / "done.json")
    if "train" in stages and (done is None or done.get("fingerprint") != fingerprint or done.get("step", 0) < steps):
        return False
    samples = directory / "samples" / str(tag)
    if "sample" in stages or "evaluate" in stages:
        made_with = read_json(samples / "sampler.json") or {}
        if any(made_with.get(k) != v for k, v in (sampler or {}).items()):
            return False
        if len(list(samples.glob("*/*.png"))) != expected_images:
            return False
    if "evaluate" in stages:
        metrics = read_json(samples / "metrics.json")
        if metrics is None or metrics.get("num_images") != expected_images:
            return False
        if (metrics.get("config") or {}).get("evaluator") != evaluator:
            return False
    return True


def write_status(directory: Path, status: str, stages: list[str], error: BaseException | None = None,
                 **extra) -> None:
    record = {"status": status, "stages": stages, **extra}
    if error is not None:
        record["error"] = f"{type(error).__name__}: {error}"
        record["traceback"] = traceback.format_exception(type(error), error, error.__traceback__)[-6:]
    io.write_json(Path(directory) / "status.json", json.loads(json.dumps(record, default=str)))


# A sweep's jobs that found their run directory in use by another process: that directory is not theirs to write a
# status into, so each leaves a record here in the sweep folder instead (cleared when the next sweep there starts)
REFUSED_DIR = ".refused"


def write_refusal(sweep_dir: Path, job_num: int, run_dir: Path, error: BaseException) -> None:
    sweep_dir, run_dir = Path(sweep_dir).absolute(), Path(run_dir).absolute()
    run = run_dir.relative_to(sweep_dir) if run_dir.is_relative_to(sweep_dir) else run_dir
    io.write_json(sweep_dir / REFUSED_DIR / f"job_{job_num}.json",
                  {"run": str(run), "error": f"{type(error).__name__}: {error}"})
