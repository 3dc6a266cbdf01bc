"""Diffusion training objectives, shared by backbones. Each draws (timestep, noise) from the trainer's generator."""

from __future__ import annotations

import torch

from dti.core.errors import InputError

MASK_FLOOR = 1e-12  # a window with no subject pixel weighs nothing (instead of dividing by zero)


def mse(prediction: torch.Tensor, target: torch.Tensor, per_sample: bool = False,
        mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean squared error over everything, or per sample (packed concepts each need their own).

    `mask` (B, 1, ..., H, W), weights in [0, 1] on the latent grid: each sample's error is its mean over the
    masked pixels (all channels), Σ m·e / (C·Σ m), and the batch's the mean of those. The weights are scaled to
    mean 1 per sample and the same means taken as without a mask, so an all-ones mask gives exactly the
    unmasked loss."""
    error = (prediction - target).square()
    if mask is not None:
        mean = mask.flatten(1).mean(dim=1).clamp_min(MASK_FLOOR)
        error = error * (mask / mean.view(-1, *([1] * (mask.dim() - 1))))
    return error.flatten(1).mean(dim=1) if per_sample else error.mean()


class NoisePrediction:
    """DDPM objective: x_t = sqrt(ᾱ_t)·x0 + sqrt(1-ᾱ_t)·ε with t uniform over the training timesteps.

    Target ε for `epsilon` checkpoints (SDXL base) or v = sqrt(ᾱ)·ε − sqrt(1-ᾱ)·x0 for `v_prediction`.
    ᾱ lives on the training device so the step needs no host round trip.
    """

    def __init__(self, alphas_cumprod: torch.Tensor, prediction_type: str, device: torch.device):
        if prediction_type not in ("epsilon", "v_prediction"):
            raise ValueError(f"unsupported prediction_type {prediction_type!r}")
        self.alphas_cumprod = alphas_cumprod.to(device=device, dtype=torch.float32)
        self.prediction_type = prediction_type

    def __call__(self, x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Returns (noisy input, timesteps, target), all float32 except the integer timesteps."""
        x0 = x0.float()
        t = torch.randint(0, len(self.alphas_cumprod), (x0.shape[0],), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        a = self.alphas_cumprod[t].view(-1, *([1] * (x0.dim() - 1)))
        noisy = a.sqrt() * x0 + (1 - a).sqrt() * noise
        target = noise if self.prediction_type == "epsilon" else a.sqrt() * noise - (1 - a).sqrt() * x0
        return noisy, t, target


class FlowMatching:
    """Rectified-flow objective (SANA, Wan): x_t = (1−σ)·x0 + σ·ε, target ε − x0, MSE.

    σ and the model's timestep come from a uniformly drawn index into a `FlowMatchEulerDiscreteScheduler`'s
    training schedule (its `shift` bends σ toward noise; 1.0 keeps σ uniform).
    """

    def __init__(self, timesteps: torch.Tensor, sigmas: torch.Tensor, device: torch.device):
        self.timesteps = timesteps.to(device=device, dtype=torch.float32)
        self.sigmas = sigmas[: len(timesteps)].to(device=device, dtype=torch.float32)

    def __call__(self, x0: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x0 = x0.float()
        idx = torch.randint(0, len(self.timesteps), (x0.shape[0],), generator=generator, device=x0.device)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        sigma = self.sigmas[idx].view(-1, *([1] * (x0.dim() - 1)))
        return (1 - sigma) * x0 + sigma * noise, self.timesteps[idx], noise - x0

    @classmethod
    def from_scheduler_config(cls, config: dict, shift: float, device: torch.device) -> FlowMatching:
        from diffusers import FlowMatchEulerDiscreteScheduler

        if not (isinstance(shift, (int, float)) and shift > 0):
            raise InputError("model.train_shift", shift, "must be a number > 0 (1 keeps sigma uniform)")

        scheduler = FlowMatchEulerDiscreteScheduler(num_train_timesteps=config.get("num_train_timesteps", 1000),
                                                    shift=shift)
        return cls(scheduler.timesteps, scheduler.sigmas, device)
