"""Adapters on the frozen denoiser (`adapter=lora|oft`), through peft as diffusers uses it: LoRA or OFT layers on
the attention projections (`adapter.targets`, default to_q, to_k, to_v of every attention layer). Their weights
train in fp32 (the denoiser stays bf16 on CUDA) with an AdamW of their own, from `adapter.start_step` on (the
official scripts: frozen for step 1, B = 0, trained from step 2). `disabled()` gives the reference pass of DCO.

Saved beside the embeddings in `<run>/adapter/`: LoRA in diffusers' format (`pipe.load_lora_weights(folder)` in a
stock pipeline); OFT in peft's (adapter_config.json + adapter_model.safetensors, which dti.load_embeddings applies).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch
from peft import LoraConfig, OFTConfig, get_peft_model_state_dict, set_peft_model_state_dict
from safetensors.torch import load_file

from dti.core import checks, io

NAME = "dti"  # the adapter's name inside the denoiser
KINDS = ("none", "lora", "oft")


@dataclass
class AdapterSettings:
    kind: str = "none"
    rank: int = 4
    alpha: float = 4.0  # LoRA's scale is alpha / rank
    targets: list[str] = field(default_factory=lambda: ["to_q", "to_k", "to_v"])
    lr: float = 5e-5
    weight_decay: float = 1e-2
    start_step: int = 2

    def __post_init__(self):
        checks.choice("adapter.kind", self.kind, KINDS)
        checks.integer("adapter.rank", self.rank, minimum=1, maximum=1024)
        checks.number("adapter.alpha", self.alpha, minimum=0, maximum=1e4, open_min=True)
        checks.number("adapter.lr", self.lr, minimum=0, maximum=1, open_min=True)
        checks.number("adapter.weight_decay", self.weight_decay, minimum=0, maximum=1)
        checks.integer("adapter.start_step", self.start_step, minimum=1)
        if not self.targets:
            checks.choice("adapter.targets", self.targets, ["a list of module names, e.g. [to_q,to_k,to_v]"])

    def peft_config(self):
        if self.kind == "lora":
            return LoraConfig(r=self.rank, lora_alpha=self.alpha, target_modules=list(self.targets),
                              init_lora_weights="gaussian")
        return OFTConfig(r=self.rank, oft_block_size=0, target_modules=list(self.targets))


class DenoiserAdapter:
    def __init__(self, denoiser: torch.nn.Module, settings: AdapterSettings, seed: int = 0):
        self.denoiser, self.settings = denoiser, settings
        with torch.random.fork_rng(devices=[]):  # the adapter's random init does not move the global stream
            torch.manual_seed(seed)
            denoiser.add_adapter(settings.peft_config(), adapter_name=NAME)
        self.params = [p for n, p in denoiser.named_parameters() if f".{NAME}" in n or n.endswith(NAME)]
        for p in self.params:
            p.data = p.data.float()  # fp32 adapter weights on the (bf16) frozen denoiser
            p.requires_grad_(True)
        self.optimizer = torch.optim.AdamW(self.params, lr=settings.lr, betas=(0.9, 0.999), eps=1e-8,
                                           weight_decay=settings.weight_decay)

    @contextlib.contextmanager
    def disabled(self):
        """The denoiser without the adapter (DCO's reference model)."""
        self.denoiser.disable_adapters()
        try:
            yield
        finally:
            self.denoiser.enable_adapters()

    def step(self, step: int) -> None:
        """The adapter's update after a step's backward pass (from start_step on; before, its gradient goes)."""
        if step >= self.settings.start_step:
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict:
        return {"weights": {k: v.detach().cpu().clone() for k, v in self.weights().items()},
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        set_peft_model_state_dict(self.denoiser, state["weights"], adapter_name=NAME)
        self.optimizer.load_state_dict(state["optimizer"])

    def weights(self) -> dict[str, torch.Tensor]:
        return get_peft_model_state_dict(self.denoiser, adapter_name=NAME)

    def save(self, folder: Path, pipeline_class, component: str) -> list[Path]:
        """diffusers' LoRA format (pipeline_class.save_lora_weights(<component>_lora_layers=...)), or peft's."""
        folder = Path(folder)
        weights = {k: v.detach().float().cpu().contiguous() for k, v in self.weights().items()}
        if self.settings.kind == "lora":
            folder.mkdir(parents=True, exist_ok=True)
            staging = Path(tempfile.mkdtemp(prefix=".adapter-", dir=folder))  # written whole, then moved in
            try:
                config = self.denoiser.peft_config[NAME].to_dict()  # so a loader keeps alpha / rank
                pipeline_class.save_lora_weights(str(staging), **{f"{component}_lora_layers": weights,
                                                                  f"{component}_lora_adapter_metadata": config})
                target = folder / "pytorch_lora_weights.safetensors"
                os.chmod(staging / target.name, 0o666 & ~io.umask())
                os.replace(staging / target.name, target)
            finally:
                shutil.rmtree(staging, ignore_errors=True)
            return [target]
        config = self.denoiser.peft_config[NAME].to_dict()
        io.write_text(folder / "adapter_config.json", json.dumps(config, indent=2, default=list) + "\n")
        io.save_safetensors(folder / "adapter_model.safetensors", weights)
        return [folder / "adapter_config.json", folder / "adapter_model.safetensors"]

    def load_saved(self, folder: Path, component: str) -> None:
        """Put weights this adapter saved (`save`) back into the denoiser, e.g. to sample a trained run."""
        folder = Path(folder)
        if self.settings.kind == "lora":
            state = load_file(str(folder / "pytorch_lora_weights.safetensors"))
            state = {k.removeprefix(f"{component}."): v for k, v in state.items()}
        else:
            state = load_file(str(folder / "adapter_model.safetensors"))
        set_peft_model_state_dict(self.denoiser, state, adapter_name=NAME)

    def remove(self) -> None:
        """Take the adapter out of the denoiser, wrappers included, so the next subject starts from the untouched
        backbone (`delete_adapters` alone leaves every wrapped layer renamed to `<name>.base_layer`)."""
        self.denoiser.unload_lora()


def load_adapter(pipe, folder: Path, component: str) -> None:
    """A run's saved adapter into a stock pipeline: LoRA through diffusers' own `load_lora_weights`, OFT (which
    diffusers does not load) through peft into the pipeline's `component`."""
    if (Path(folder) / "pytorch_lora_weights.safetensors").is_file():
        pipe.load_lora_weights(str(folder))
    elif (Path(folder) / "adapter_config.json").is_file():
        apply_saved_oft(getattr(pipe, component), folder)


def apply_saved_oft(denoiser: torch.nn.Module, folder: Path) -> None:
    """Put a saved OFT adapter (peft format) into a stock pipeline's denoiser."""
    config = json.loads((Path(folder) / "adapter_config.json").read_text())
    config = {k: v for k, v in config.items() if k in OFTConfig.__dataclass_fields__}
    denoiser.add_adapter(OFTConfig(**config), adapter_name=NAME)
    set_peft_model_state_dict(denoiser, load_file(str(Path(folder) / "adapter_model.safetensors")),
                              adapter_name=NAME)
