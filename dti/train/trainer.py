"""The training loop: cached latents, pre-tokenised prompts, one optimizer over the concept's tables.

Randomness of a step (which images and templates, latent sampling, timesteps, noise) is drawn for the whole
effective batch up front from one generator on the training device, then split into micro-batches: gradient
accumulation sees the same draws as one big batch, and a resumed run sees the draws an uninterrupted run would.
Nothing in the step reads a value back to the host except on logging, checkpoint and validation steps.
"""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path

import torch
from diffusers.utils import make_image_grid
from tqdm.auto import tqdm

from dti.backbones.base import Backbone
from dti.core import io
from dti.core.errors import InputError
from dti.core.io import read_json
from dti.method.concept import Concept
from dti.method.formats import save_embeddings, write_kohya_lora
from dti.method.formats.metadata import RunFacts, embedding_metadata
from dti.method.method import ConceptMethod
from dti.train import checkpoint
from dti.train.adapters import DenoiserAdapter
from dti.train.curves import plot_training, read_log
from dti.train.health import Health
from dti.train.schedule import LearningRateSchedule, ScheduleSettings
from dti.train.settings import TrainSettings
from dti.train.templates import TEMPLATES

log = logging.getLogger(__name__)


def step_folder(run_dir: Path, step: int) -> Path:
    """Where the embeddings of a saved step are: embeddings/steps/000100/ (names sort by step)."""
    return Path(run_dir) / "embeddings" / "steps" / f"{step:06d}"


def _finite_or_none(value: float) -> float | None:
    """train_log.jsonl stays JSON: a non-finite number is written as null, never as a bare NaN."""
    return value if math.isfinite(value) else None


# what train.resume=never clears (samples/ too: they were made from the embeddings being replaced)
TRAINING_OUTPUTS = ("checkpoints", "embeddings", "adapter", "validation", "train_log.jsonl", "done.json",
                    "samples", "train_curves.png")


class Trainer:
    def __init__(self, backbone: Backbone, concept: Concept, optimizer: torch.optim.Optimizer, images: list,
                 subject: str, settings: TrainSettings, run_dir: Path, logger, seed: int = 42,
                 fingerprint: dict | None = None, method: ConceptMethod | None = None,
                 adapter: DenoiserAdapter | None = None, captions: list[str] | None = None,
                 masks: list | None = None, schedule: ScheduleSettings | None = None, *, facts: RunFacts):
        self.backbone, self.concept, self.optimizer = backbone, concept, optimizer
        self.method, self.adapter = method or ConceptMethod(), adapter
        # what the embedding files say about this run (dti.run.build knows it); the tool files are named after its
        # trigger
        self.facts = facts
        self.images, self.subject, self.settings, self.validation = images, subject, settings, settings.validation
        # per-image prompt templates (None: settings.templates) and loss masks (None: every pixel counts)
        self.captions, self.masks = captions, masks
        self.run_dir, self.logger = Path(run_dir), logger
        # what the run's outputs depend on beyond its directory name (checkpoint, images, initializer): a resume
        # or a "complete" run made from anything else is refused instead of silently reused
        self.fingerprint = fingerprint or {}
        self.ckpt_dir = self.run_dir / "checkpoints"
        self.generator = torch.Generator(backbone.device).manual_seed(seed)
        self.step = 0
        self.started = time.perf_counter()
        self.last_loss: torch.Tensor | None = None
        self.last_grads: dict | None = None
        self.done_record: dict = {}  # extra fields for done.json (e.g. which packing pass trained it)
        self.health = Health(list(concept.tables), backbone.device)
        # one lr curve for the concept's optimizer and the adapter's own
        self.schedule = LearningRateSchedule([optimizer] + ([adapter.optimizer] if adapter else []),
                                             schedule or ScheduleSettings(), settings.steps)
        self.last_lrs: list[float] = self.schedule.lrs()  # the lrs the last step used

    # -- state ----------------------------------------------------------------------------------------------
    def _state(self) -> dict:
        return {
            "tokens": self.concept.tokens, "fingerprint": self.fingerprint,
            "tables": {k: t.weight.detach().cpu().clone() for k, t in self.concept.tables.items()},
            "optimizer": self.optimizer.state_dict(), "rng": checkpoint.rng_state(self.generator),
            "schedule": self.schedule.state_dict(),
            "threads": torch.get_num_threads(),  # CPU results depend on it in the last bits (docs/failures.md)
            **({"adapter": self.adapter.state_dict()} if self.adapter else {}),
        }

    def _find_resume(self) -> Path | None:
        resume = str(self.settings.resume)
        if resume == "never":
            return None
        if resume == "auto":
            found = checkpoint.list_checkpoints(self.ckpt_dir)
            return found[-1][1] if found else None
        if not Path(resume).is_file():
            raise InputError("train.resume", resume, "is not auto, never or an existing checkpoint file")
        return Path(resume)

    def _load_resume(self) -> tuple[Path | None, dict | None]:
        """The checkpoint to resume from, loaded. With resume=auto an unreadable latest checkpoint (torn by a kill
        or a full disk) gives way to the one before, said in the log; a checkpoint given by path must load."""
        path = self._find_resume()
        if path is None:
            return None, None
        candidates = [p for _, p in reversed(checkpoint.list_checkpoints(self.ckpt_dir))] \
            if str(self.settings.resume) == "auto" else [path]
        for candidate in candidates:
            try:
                state = checkpoint.load(candidate)
                if not {"tables", "tokens", "optimizer", "rng", "step"} <= set(state):
                    raise KeyError("incomplete checkpoint")
            except Exception as err:  # noqa: BLE001  (torch.load raises many types for a bad file)
                if str(self.settings.resume) != "auto":
                    raise InputError("train.resume", str(candidate), f"cannot be loaded ({type(err).__name__})") \
                        from None
                log.warning("%s is unreadable (%s); trying the checkpoint before it", candidate, type(err).__name__)
                continue
            if candidate != path:
                log.warning("resuming from %s instead of the unreadable latest checkpoint", candidate)
            return candidate, state
        log.warning("no readable checkpoint in %s: training starts over", self.ckpt_dir)
        return None, None

    def _check_fingerprint(self, found: dict | None, source: Path) -> None:
        if found is not None and found != self.fingerprint:
            changed = []
            for key in sorted({**found, **self.fingerprint}):
                old, new = found.get(key), self.fingerprint.get(key)
                if isinstance(old, dict) and isinstance(new, dict):  # name the settings that differ
                    changed += [k for k in sorted({**old, **new}) if old.get(k) != new.get(k)]
                elif old != new:
                    changed.append(key)
            raise InputError("train.resume", str(source), f"was made from other inputs ({', '.join(changed)}); "
                             "use train.resume=never to start over, or another run directory")

    def resume(self) -> None:
        if str(self.settings.resume) == "never":
            self._clear_training_outputs()
        path, state = self._load_resume()
        if path is None:
            self._truncate_log(0)  # a run that died before its first checkpoint starts its log afresh
            return
        tables, tokens, saved_optimizer = state["tables"], state["tokens"], state["optimizer"]
        if tokens != self.concept.tokens or tables.keys() != self.concept.tables.keys() or any(
                tables[k].shape != t.weight.shape for k, t in self.concept.tables.items()):
            raise InputError("train.resume", str(path), f"was made for tokens {tokens}, not "
                             f"{self.concept.tokens}; use train.resume=never or another run directory")
        self._check_fingerprint(state.get("fingerprint"), path)
        with torch.no_grad():
            for key, table in self.concept.tables.items():
                table.weight.copy_(tables[key])
        # Keep the optimizer's running state from the checkpoint, but this run's hyper-parameters and priors:
        # load_state_dict would otherwise bring back the saved lr/kappa and a CPU copy of each prior.
        live = [{k: v for k, v in group.items() if k != "params"} for group in self.optimizer.param_groups]
        self.optimizer.load_state_dict(saved_optimizer)
        for group, settings in zip(self.optimizer.param_groups, live):
            group.update(settings)
        checkpoint.restore_rng(self.generator, state["rng"])
        if self.adapter is not None:
            if "adapter" not in state:
                raise InputError("train.resume", str(path), "was made without an adapter; use train.resume=never")
            self.adapter.load_state_dict(state["adapter"])
        self.schedule.load_state_dict(state.get("schedule"), state["step"])  # sets each optimizer's lr again
        threads = state.get("threads")
        if self.backbone.device.type == "cpu" and threads is not None and threads != torch.get_num_threads():
            log.warning("resuming with %d CPU threads; %s was written with %d, so the result may differ from an "
                        "uninterrupted run in the last bits", torch.get_num_threads(), path.name, threads)
        self.step = state["step"]
        self._truncate_log(self.step)
        log.info("resumed from %s (step %d)", path, self.step)

    def _clear_training_outputs(self) -> None:
        """train.resume=never: start over in this directory; the previous run's training outputs go first."""
        import shutil

        for name in TRAINING_OUTPUTS:
            path = self.run_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    def _truncate_log(self, step: int) -> None:
        """Drop log lines an interrupted run wrote after the checkpoint we resume from."""
        path = self.run_dir / "train_log.jsonl"
        if path.exists():
            kept = [json.dumps(r, allow_nan=False) for r in read_log(path) if r.get("step", 0) <= step]
            io.write_text(path, "".join(ln + "\n" for ln in kept))  # a torn last line goes too

    # -- loop -----------------------------------------------------------------------------------------------
    def complete(self) -> bool:
        """done.json is there (made from these inputs) and the checkpoint has reached the last step."""
        done = self.done()
        if done is None or self.step < self.settings.steps:
            return False
        self._check_fingerprint(done.get("fingerprint"), self.run_dir / "done.json")
        return True

    def done(self) -> dict | None:
        """done.json, or None when it is missing or unreadable (the run then finishes again from its checkpoint)."""
        return read_json(self.run_dir / "done.json")

    def fit(self) -> dict:
        if self.complete():
            log.info("%s is complete; nothing to do", self.run_dir)
            return self.done()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        prepared = self.prepare()
        with tqdm(total=self.settings.steps, initial=self.step, desc=f"train {self.subject}",
                  dynamic_ncols=True) as bar:  # closed on an error too, so the error line starts a line
            while self.step < self.settings.steps:
                self.step += 1
                self.last_loss, self.last_grads = self.train_step(prepared, grad_norms=self.logging_due())
                bar.update(1)
                self.after_step(bar)
        return self.finish()

    def logging_due(self) -> bool:
        return self._due(self.settings.log_every)

    def after_step(self, bar=None, validate: bool = True) -> None:
        """Logging, checkpoint and (unless the caller does it) validation after the optimizer step
        (`last_loss`/`last_grads` set by it)."""
        s = self.settings
        if self.logging_due() or self._due(s.checkpoint_every) or (validate and self.validation_due()):
            self.check_finite()
        if self.logging_due():  # the direction after this step's update, the gradient that made it
            stats = {k: {**tab.stats(), "grad_norm": self.last_grads[k]} for k, tab in self.concept.tables.items()}
            self._log(self.last_loss, stats, bar)
        if self._due(s.checkpoint_every):
            checkpoint.save(self.ckpt_dir, self.step, self._state(), s.keep_checkpoints)
            self.save_embeddings(step_folder(self.run_dir, self.step))  # kept, unlike checkpoints: scored later
        if validate and self.validation_due():
            self.validate()

    def save_embeddings(self, folder: Path, adapter_folder: Path | None = None) -> list[Path]:
        """The concept's current rows in every format (dti.method.formats) into `folder`, and the adapter, if
        any, into `adapter_folder` (default `folder/adapter`: a saved step is scored with the adapter it had)."""
        tables = self.concept.tables
        metadata = embedding_metadata(
            self.facts, self.backbone.modelspec_architecture, self.backbone.modelspec_implementation,
            self.concept.placeholder, self.concept.initializer, self.step,
            {k: t.magnitude if t.fixed_norm else None for k, t in tables.items()}, self.backbone.embedding_metadata())
        files = save_embeddings(self.concept.embeddings(), self.concept.placeholder, self.backbone.encoders,
                                folder, self.facts.trigger, metadata, self.backbone.tool_files)
        if self.adapter is not None:
            files += self.adapter.save(adapter_folder or Path(folder) / "adapter", self.backbone.pipeline_class,
                                       self.backbone.denoiser_name)
        return files

    def check_finite(self) -> None:
        """Stop (NonFiniteError) if a loss or gradient went non-finite since the start; a host sync."""
        found = checkpoint.list_checkpoints(self.ckpt_dir)
        self.health.check(str(found[-1][1].relative_to(self.run_dir)) if found else None)

    def validation_due(self) -> bool:
        """A validation during training (the final one is part of `finish`)."""
        v = self.validation
        return v.enabled and bool(v.every) and self.step % v.every == 0 and self.step < self.settings.steps

    def finish(self, validated: bool = False) -> dict:
        """Export the embeddings, the final validation (unless `validated`: the caller made it), then done.json
        (last: its presence means complete)."""
        self.check_finite()
        files = self.save_embeddings(self.run_dir / "embeddings", self.run_dir / "adapter")
        if self.adapter is not None:
            if self.adapter.settings.kind == "lora" and self.backbone.denoiser_name == "unet":
                files.append(write_kohya_lora(self.run_dir / "adapter" / f"{self.facts.trigger}.safetensors",
                                              self.adapter.weights(), self.concept.embeddings(),
                                              self.concept.placeholder, self.adapter.settings.alpha))
        if self.validation.enabled and not validated:
            self.validate()
        norms = self.norms()
        plot_training(self.run_dir / "train_log.jsonl", self.run_dir / "train_curves.png",
                      {k: v["vocabulary_mean"] for k, v in norms.items()})
        done = {"step": self.step, "subject": self.subject, "tokens": self.concept.tokens,
                "fingerprint": self.fingerprint, "embeddings": [str(f.relative_to(self.run_dir)) for f in files],
                "norms": norms, "threads": torch.get_num_threads(),
                "train_seconds_this_process": round(time.perf_counter() - self.started, 3),
                **self.done_record}
        io.write_json(self.run_dir / "done.json", done)
        return done

    @torch.no_grad()
    def norms(self) -> dict[str, dict[str, float]]:
        """Per encoder: the mean norm of the learned rows and of the vocabulary rows the tokenizer can produce."""
        out = {}
        for slot in self.backbone.encoders:
            vocabulary = slot.input_embeddings().weight[: slot.num_vocab_rows].float().norm(dim=-1).mean()
            rows = self.concept.tables[slot.key].embeddings().norm(dim=-1).mean()
            out[slot.key] = {"embedding": round(rows.item(), 6), "vocabulary_mean": round(vocabulary.item(), 6)}
        return out

    def prepare(self) -> dict:
        """What every step reuses: cached latents (and masks) and pre-tokenised prompt templates (on the device).
        With captions, `caption_of` maps each cached sample (an image, and its mirror with random_flip) to the
        prompt of its image."""
        s = self.settings
        cache = self.backbone.cache_latents(self.images, s.resolution, s.random_flip, s.crop, s.sample_latents,
                                            self.masks)
        templates = TEMPLATES[s.templates] if self.captions is None else self.captions
        caption_of = None if self.captions is None else torch.arange(
            len(self.captions), device=self.backbone.device).repeat_interleave(2 if s.random_flip else 1)
        return {"cache": cache, "num_templates": len(templates), "caption_of": caption_of,
                "token_ids": self.backbone.tokenize([self.concept.prompt(t) for t in templates])}

    def draw(self, prepared: dict) -> dict:
        """All random draws of one step for the whole effective batch, in one fixed order from this run's
        generator: images, templates, latent sample, timesteps and noise, text augmentation. Packed training
        calls this too, which is what makes a packed concept see exactly the draws of its separate run."""
        s, device = self.settings, self.backbone.device
        batch = s.batch_size * s.grad_accum
        image_idx = torch.randint(len(prepared["cache"]), (batch,), generator=self.generator, device=device)
        # drawn with captions too (then unused): the draws keep one order whichever prompts a run has
        template_idx = torch.randint(prepared["num_templates"], (batch,), generator=self.generator, device=device)
        if prepared.get("caption_of") is not None:
            template_idx = prepared["caption_of"][image_idx]  # each image's own caption
        x0, extras = prepared["cache"].draw(image_idx, self.generator)
        noisy, t, target = self.backbone.objective(x0, self.generator)
        augment = self.backbone.text_augmentation(batch, self.generator)
        return {"ids": [ids[template_idx] for ids in prepared["token_ids"]], "noisy": noisy, "t": t,
                "target": target, "extras": extras, "augment": augment, "samples": image_idx}

    def apply_update(self, loss: torch.Tensor, grad_norms: bool) -> dict | None:
        """The optimizer step on the accumulated gradients of a step whose mean loss is `loss`; ‖g‖ per encoder
        first, if asked. Non-finite values are recorded on the device (Health), not synced here."""
        self.health.update(self.step, loss, [t.weight.grad for t in self.concept.tables.values()])
        grads = {k: tab.grad_norm() for k, tab in self.concept.tables.items()} if grad_norms else None
        self.last_lrs = self.schedule.lrs()
        if self.method.train_embedding:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        if self.adapter is not None:
            self.adapter.step(self.step)
        self.schedule.step()
        return grads

    def train_step(self, prepared: dict, grad_norms: bool = False) -> tuple[torch.Tensor, dict | None]:
        """One optimizer step; returns the loss (a device tensor: no host sync) and, if asked, ‖g‖ per encoder."""
        s, device = self.settings, self.backbone.device
        batch = s.batch_size * s.grad_accum
        d = self.draw(prepared)
        loss_sum = torch.zeros((), device=device)
        for part in torch.arange(batch, device=device).split(s.batch_size):
            cond = self.backbone.encode_text([ids[part] for ids in d["ids"]],
                                             {k: v[part] for k, v in d["augment"].items()})
            loss = self.micro_loss((d["noisy"][part], d["t"][part], d["target"][part]), cond,
                                   {k: v[part] for k, v in d["extras"].items()})
            (loss * (len(part) / batch)).backward()
            loss_sum += loss.detach() * (len(part) / batch)
        extra = self.method.extra_loss(self.concept.tables)  # once per step, not per micro-batch
        if extra is not None:
            extra.backward()
            loss_sum += extra.detach()
        return loss_sum, self.apply_update(loss_sum, grad_norms)

    def micro_loss(self, inputs: tuple, cond: dict, extras: dict) -> torch.Tensor:
        """The method's loss (mse, or DCO against the reference pass) of one micro-batch."""
        def model():
            return self.backbone.loss(*inputs, cond, extras)

        def reference():  # the same inputs through the denoiser with its adapter off
            with self.adapter.disabled():
                return self.backbone.loss(*inputs, {k: v.detach() for k, v in cond.items()}, extras)

        return self.method.loss(model, reference if self.adapter is not None else None)

    def _due(self, every: int) -> bool:
        return self.step % every == 0 or self.step == self.settings.steps

    def _log(self, loss: torch.Tensor, stats: dict, bar) -> None:
        record = {"step": self.step, "loss": _finite_or_none(loss.item()), "lr": self.last_lrs[0]}
        if self.adapter is not None:
            record["adapter_lr"] = self.last_lrs[1]
        for key, values in stats.items():
            for name, value in values.items():
                record[f"{key}/{name}"] = _finite_or_none(value.item())
        if bar is not None:
            bar.set_postfix(loss=f"{record['loss']:.4f}")
        with open(self.run_dir / "train_log.jsonl", "a", encoding="utf-8") as f:  # append-only log, one line each
            f.write(json.dumps(record, allow_nan=False) + "\n")
        self.logger.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=self.step)

    def validation_prompts(self) -> tuple[list[str], list[int]]:
        """The prompts and seeds of a validation grid, row by row."""
        v = self.validation
        return [self.concept.prompt(p) for p in v.prompts for _ in v.seeds], [s for _ in v.prompts for s in v.seeds]

    def validate(self, images: list | None = None) -> Path:
        """Write this step's validation grid; `images`: already made from `validation_prompts()` (packed
        training makes every concept's images in one batch)."""
        v = self.validation
        if images is None:
            images = self.backbone.generate(*self.validation_prompts(), *v.size(), v.num_inference_steps,
                                            v.guidance_scale)
        path = self.run_dir / "validation" / f"step_{self.step:06d}.png"
        io.save_image(path, make_image_grid(images, rows=len(v.prompts), cols=len(v.seeds)))
        self.logger.log_image("validation", path, step=self.step, caption=" | ".join(v.prompts))
        return path
