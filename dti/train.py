"""The recipe: config in, run directory out: train, then sample the prompt set, then score the samples.

    python launch.py model=sdxl data.subject=dog data.root=/path/to/dreambooth
    python launch.py model=sdxl data.subject=dog "stage=[sample,evaluate]"     # re-score, no retraining

`launch.py` calls `run`; tests call it in-process. Every check of the user's input happens before the first
model is loaded and before anything is written.
"""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from dti.build import (
    build_concept,
    build_evaluator,
    build_logger,
    build_prompt_set,
    build_sampler_settings,
    build_subject,
    build_trainer,
    check_resolutions,
    check_stages,
    check_training,
)
from dti.sampler import Sampler, embeddings_checksum, load_trained_embeddings


def run(cfg: DictConfig, run_dir: str | Path) -> dict:
    """Run the configured stages in `run_dir`; returns done.json's content and, when evaluated, the metrics."""
    run_dir = Path(run_dir)
    stages = check_stages(cfg)
    if "train" in stages:
        check_training(cfg)
    sampler_settings = build_sampler_settings(cfg) if {"sample", "evaluate"} & set(stages) else None
    subject = build_subject(cfg)  # reads and checks every image before the (slow) model load
    prompt_set = build_prompt_set(cfg, subject) if sampler_settings else None
    result = {}
    if "train" in stages or "sample" in stages:
        backbone, concept = build_concept(cfg, subject)  # loaded once for training and sampling
        check_resolutions(cfg, backbone, stages)
    if "train" in stages:
        trainer = build_trainer(cfg, run_dir, backbone, concept, subject)
        trainer.resume()
        trainer.logger = build_logger(cfg, run_dir)
        failed = True
        try:
            result["train"] = trainer.fit()
            failed = False
        finally:
            trainer.logger.finish(failed=failed)  # always: sequential jobs must never share a logger run
    if "sample" in stages:
        embeddings = run_dir / "embeddings"
        if "train" not in stages:
            load_trained_embeddings(concept, backbone, embeddings)
        sampler = Sampler(backbone, concept, sampler_settings, subject.class_word)
        result["samples"] = str(sampler.run(prompt_set, run_dir / "samples",
                                            embeddings_checksum(backbone, embeddings)))
    if "evaluate" in stages:
        evaluator = build_evaluator(cfg)
        tag = Sampler.tag_for(sampler_settings, prompt_set)
        metrics = evaluator.evaluate(run_dir / "samples" / tag, subject.images, subject.name,
                                     run_dir / "eval_cache", config=OmegaConf.to_container(cfg, resolve=True))
        result["metrics"] = {k: metrics[k] for k in ("image_sim", "text_sim", "text_sim_official", "num_images")}
    return result
