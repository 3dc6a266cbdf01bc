"""Packed multi-concept training: K concepts share the frozen backbone and one batch per step.

Each concept keeps everything of its own: placeholder tokens and table (the lookups nest, one wrapper per
concept), optimizer and its state, prior, random stream (a generator seeded as its separate run would be), run
directory, checkpoints, log, validation and exports: each is a `Trainer`. Per step every concept draws its own
images, templates, timesteps and noise exactly as its separate run would; the K batches are concatenated for one
text-encoder + denoiser pass, and the summed per-concept loss gives each table the gradient of its own batch only
(no other concept's tokens appear in its prompts). RSGD's per-row normalisation then makes each concept's step
independent of the others, so a packed concept ends where its separate run ends (up to float rounding of the
larger batch). Which concepts pack together is decided above (dti.run.packing, dti.sweep.packing).
"""

from __future__ import annotations

import torch
from tqdm.auto import tqdm

from dti.train.trainer import Trainer

VALIDATION_BATCH = 16  # images per generate call when packed concepts validate together


class PackedTrainer:
    def __init__(self, trainers: list[Trainer]):
        if len({t.backbone for t in trainers}) != 1:
            raise ValueError("packed concepts must share one backbone")
        if any(t.adapter is not None or t.method.objective != "mse" for t in trainers):
            raise ValueError("concepts with an adapter or another objective than mse train on their own")
        if len({t.masks is None for t in trainers}) != 1:
            raise ValueError("concepts with loss masks and concepts without train in separate packs")
        settings = {(t.settings.batch_size, t.settings.grad_accum, t.settings.resolution) for t in trainers}
        if len(settings) != 1:
            raise ValueError("packed concepts need the same batch size, accumulation and resolution")
        self.trainers, self.backbone = trainers, trainers[0].backbone

    def fit(self) -> dict[str, dict]:
        active = [t for t in self.trainers if not t.complete()]
        for t in active:
            t.run_dir.mkdir(parents=True, exist_ok=True)
        prepared = {id(t): t.prepare() for t in active}
        steps = max((t.settings.steps for t in active), default=0)
        with tqdm(total=steps, initial=min((t.step for t in active), default=0),
                  desc=f"train {len(active)} packed", dynamic_ncols=True) as bar:
            self._loop(active, prepared, bar)
        return {t.subject: t.done() for t in self.trainers}

    def _loop(self, active: list[Trainer], prepared: dict, bar) -> None:
        while active:
            finished = [t for t in active if t.step >= t.settings.steps]  # or resumed at its last checkpoint
            self.validate([t for t in finished if t.validation.enabled])
            for t in finished:
                t.finish(validated=True)
                active.remove(t)
            if not active:
                break
            self.step(active, prepared)
            bar.update(1)
            for t in active:
                t.after_step(validate=False)
            self.validate([t for t in active if t.validation_due()])

    def validate(self, trainers: list[Trainer]) -> None:
        """The validation grids of `trainers`, with the images of all concepts that share validation settings made
        together, VALIDATION_BATCH at a time. Each image has its own generator seeded by its seed alone, so it is
        the image its concept's own validation would make (up to float rounding of the larger batch)."""
        groups: dict[tuple, list[Trainer]] = {}
        for t in trainers:
            t.check_finite()
            v = t.validation
            groups.setdefault((v.size(), v.num_inference_steps, v.guidance_scale), []).append(t)
        for (size, steps, guidance), group in groups.items():
            requests = [t.validation_prompts() for t in group]
            prompts = [p for ps, _ in requests for p in ps]
            seeds = [seed for _, ss in requests for seed in ss]
            images = []
            for start in range(0, len(prompts), VALIDATION_BATCH):
                chunk = slice(start, start + VALIDATION_BATCH)
                images += self.backbone.generate(prompts[chunk], seeds[chunk], *size, steps, guidance)
            for t, (ps, _) in zip(group, requests):
                t.validate(images[:len(ps)])
                images = images[len(ps):]

    def step(self, trainers: list[Trainer], prepared: dict) -> None:
        """One optimizer step of every concept in `trainers`, through one pass of the shared backbone."""
        s, device = trainers[0].settings, self.backbone.device
        batch = s.batch_size * s.grad_accum
        draws = []
        for t in trainers:  # each concept's draws, in the order and from the stream of its separate run
            t.step += 1
            draws.append(t.draw(prepared[id(t)]))
        losses = torch.zeros(len(trainers), device=device)
        for part in torch.arange(batch, device=device).split(s.batch_size):
            b = _concat(draws, part)  # concept 0's slice, then concept 1's, ...
            cond = self.backbone.encode_text(b["ids"], b["augment"])
            per_sample = self.backbone.loss(b["noisy"], b["t"], b["target"], cond, b["extras"], per_sample=True)
            # each concept's mean over its own samples; the sum keeps their gradients apart
            part_losses = per_sample.view(len(trainers), -1).mean(dim=1) * (len(part) / batch)
            part_losses.sum().backward()
            losses += part_losses.detach()
        for k, t in enumerate(trainers):  # each concept's own extra terms (CrossInit's anchor), once per step
            extra = t.method.extra_loss(t.concept.tables)
            if extra is not None:
                extra.backward()
                losses[k] += extra.detach()
        for k, t in enumerate(trainers):
            t.last_loss = losses[k]
            t.last_grads = t.apply_update(losses[k], t.logging_due())


def _concat(draws: list[dict], part: torch.Tensor) -> dict:
    """The micro-batch `part` of every concept's draws, concatenated concept after concept."""
    def cat(tensors):
        return torch.cat([x[part] for x in tensors])

    first = draws[0]
    return {
        "ids": [cat([d["ids"][e] for d in draws]) for e in range(len(first["ids"]))],
        **{key: cat([d[key] for d in draws]) for key in ("noisy", "t", "target")},
        **{group: {k: cat([d[group][k] for d in draws]) for k in first[group]} for group in ("extras", "augment")},
    }
