"""Learning-rate schedules (`optimizer.schedule`, `optimizer.warmup_steps`), through diffusers' `get_scheduler`.

One schedule drives every optimizer of a run (the concept's, and the adapter's when there is one): the lr of each
is its configured lr times the same factor f(k). As in diffusers' training scripts, the scheduler steps once after
each optimizer step, so training step k (1-based) uses f(k − 1): with a warm-up the first step has lr 0, and the
factor reaches 1 at step warmup_steps + 1. The factor depends on the step alone, so a resumed run continues the
curve where it stopped; its state is saved in every checkpoint.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
from diffusers.optimization import get_scheduler

from dti.core import checks
from dti.core.errors import InputError

# our names -> diffusers' (its "constant" ignores the warm-up; "constant_with_warmup" with 0 steps is constant)
SCHEDULES = {"constant": "constant_with_warmup", "cosine": "cosine", "linear": "linear"}
KEYS = ("schedule", "warmup_steps")  # where they live: the optimizer node (not arguments of the optimizer)


@dataclass
class ScheduleSettings:
    schedule: str = "constant"
    warmup_steps: int = 0

    def __post_init__(self):
        checks.choice("optimizer.schedule", self.schedule, sorted(SCHEDULES))
        checks.integer("optimizer.warmup_steps", self.warmup_steps, minimum=0)

    def check_steps(self, steps: int) -> None:
        if self.warmup_steps > steps:
            raise InputError("optimizer.warmup_steps", self.warmup_steps, f"is more than train.steps={steps}")


class LearningRateSchedule:
    """The schedule of a run's optimizers, stepped once per training step (`step`)."""

    def __init__(self, optimizers: list[torch.optim.Optimizer], settings: ScheduleSettings, total_steps: int):
        settings.check_steps(total_steps)
        self.settings = settings
        self.schedulers = [get_scheduler(SCHEDULES[settings.schedule], optimizer,
                                         num_warmup_steps=settings.warmup_steps, num_training_steps=total_steps)
                           for optimizer in optimizers]

    def step(self) -> None:
        with warnings.catch_warnings():
            # an optimizer that did not step this time (an adapter before its start step, a method that keeps the
            # embedding fixed) still follows the curve: torch's warning about that order does not apply
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step\\(\\)`")
            for scheduler in self.schedulers:
                scheduler.step()

    def lrs(self) -> list[float]:
        """The lr each optimizer uses in the coming step (its first param group's)."""
        return [scheduler.optimizer.param_groups[0]["lr"] for scheduler in self.schedulers]

    def state_dict(self) -> list[dict]:
        return [scheduler.state_dict() for scheduler in self.schedulers]

    def load_state_dict(self, states: list[dict] | None, step: int) -> None:
        """Continue at training step `step` from a checkpoint's states (None: a checkpoint written without them;
        the factor depends on the step alone, so it is recomputed). The base lrs stay this run's."""
        for k, scheduler in enumerate(self.schedulers):
            base = list(scheduler.base_lrs)
            if states is not None and k < len(states):
                scheduler.load_state_dict(states[k])
            scheduler.base_lrs = base
            scheduler.last_epoch = step
            lrs = [b * f(step) for b, f in zip(scheduler.base_lrs, scheduler.lr_lambdas)]  # as LambdaLR.get_lr
            for group, lr in zip(scheduler.optimizer.param_groups, lrs):
                group["lr"] = lr
            scheduler._last_lr = lrs
