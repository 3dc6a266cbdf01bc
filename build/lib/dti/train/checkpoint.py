"""Training checkpoints: direction tables, optimizer state, step and RNG states, written atomically.

A resumed run continues with exactly the state an uninterrupted run would have had at that step, so on CPU the
final embeddings are bit-identical.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch

from dti.core import io

_NAME = re.compile(r"^step_(\d+)\.pt$")


def checkpoint_path(folder: Path, step: int) -> Path:
    return Path(folder) / f"step_{step:06d}.pt"


def list_checkpoints(folder: Path) -> list[tuple[int, Path]]:
    if not Path(folder).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(folder).iterdir() if (m := _NAME.match(p.name))]
    return sorted(found)


def save(folder: Path, step: int, state: dict, keep: int) -> Path:
    path = checkpoint_path(folder, step)
    io.save_torch(path, {"step": step, **state})
    for _, old in list_checkpoints(folder)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return path


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def rng_state(generator: torch.Generator) -> dict:
    state = {"generator": generator.get_state(), "torch": torch.get_rng_state()}
    if torch.cuda.is_available():  # the current device only: a resume may see fewer GPUs (gpu_pool, SLURM)
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def restore_rng(generator: torch.Generator, state: dict) -> None:
    generator.set_state(state["generator"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda = state["cuda"]
        torch.cuda.set_rng_state(cuda[0] if isinstance(cuda, (list, tuple)) else cuda)
