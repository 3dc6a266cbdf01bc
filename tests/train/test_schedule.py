"""Learning-rate schedules: the factor of each step, RSGD's step on the sphere following it, the adapter's lr."""

import json
import math

import pytest
import torch
from safetensors.torch import load_file

from dti.core.errors import InputError
from dti.method.optim import RiemannianSGD
from dti.train.schedule import LearningRateSchedule, ScheduleSettings
from dti.train.trainer import step_folder


def _lrs_per_step(schedule: LearningRateSchedule, steps: int) -> list[list[float]]:
    out = []
    for _ in range(steps):  # as the trainer: the lr of a step is read, then the scheduler steps
        out.append(schedule.lrs())
        schedule.step()
    return out


@pytest.mark.parametrize("name,expected", [
    # training step k uses f(k - 1); warm-up of 1 step over 4 steps (worked by hand from the formulas)
    ("constant", [0.0, 1.0, 1.0, 1.0]),
    ("linear", [0.0, 1.0, 2 / 3, 1 / 3]),
    ("cosine", [0.0, 1.0, 0.75, 0.25]),
])
def test_each_schedule_scales_every_optimizer_by_the_same_factor(name, expected):
    row = torch.nn.Parameter(torch.nn.functional.normalize(torch.ones(1, 4), dim=-1))
    other = torch.nn.Parameter(torch.zeros(3))
    optimizers = [RiemannianSGD([row], lr=0.04), torch.optim.AdamW([other], lr=5e-5)]
    got = _lrs_per_step(LearningRateSchedule(optimizers, ScheduleSettings(name, 1), total_steps=4), 4)
    assert [lr for lr, _ in got] == pytest.approx([0.04 * f for f in expected], abs=1e-12)
    assert [lr for _, lr in got] == pytest.approx([5e-5 * f for f in expected], abs=1e-16)


def test_resumed_schedule_continues_with_this_runs_lr():
    def fresh(lr):
        row = torch.nn.Parameter(torch.ones(1, 2))
        return LearningRateSchedule([RiemannianSGD([row], lr=lr)], ScheduleSettings("cosine", 2), 6)

    straight = _lrs_per_step(fresh(0.04), 6)
    first = fresh(0.04)
    _lrs_per_step(first, 3)
    resumed = fresh(0.04)
    resumed.load_state_dict(first.state_dict(), step=3)
    assert _lrs_per_step(resumed, 3) == straight[3:]  # exactly: the same expression as LambdaLR's
    old = fresh(0.04)
    old.load_state_dict(None, step=3)  # a checkpoint written without the schedule's state
    assert _lrs_per_step(old, 3) == straight[3:]


def test_rsgd_steps_follow_the_schedule_in_training(train_run):
    """RSGD moves each unit row by exactly atan(lr) on the sphere (a unit tangent step, then retraction), so the
    angle between the rows saved after consecutive steps measures the lr each step used."""
    _, _, run_dir = train_run("optimizer.schedule=linear", "optimizer.warmup_steps=2", "train.checkpoint_every=1")
    logged = [json.loads(line)["lr"] for line in (run_dir / "train_log.jsonl").read_text().splitlines()]
    assert logged == pytest.approx([0.0, 0.02, 0.04, 0.02], abs=1e-12)  # f(k-1): 0, 1/2, 1, 1/2
    rows = [load_file(step_folder(run_dir, k) / "learned_embeds_2.safetensors")["<toy>"].double()
            for k in range(1, 5)]
    for k in range(1, 4):
        cos = torch.nn.functional.cosine_similarity(rows[k - 1], rows[k], dim=-1).clamp(max=1)
        assert torch.allclose(torch.arccos(cos), torch.tensor(math.atan(logged[k]), dtype=torch.double),
                              atol=2e-4), k


def test_bad_schedule_settings_name_the_field():
    with pytest.raises(InputError, match="optimizer.schedule='step'"):
        ScheduleSettings("step", 0)
    with pytest.raises(InputError, match="optimizer.warmup_steps=-1"):
        ScheduleSettings("linear", -1)
    with pytest.raises(InputError, match="optimizer.warmup_steps=5.*train.steps=4"):
        ScheduleSettings("linear", 5).check_steps(4)
