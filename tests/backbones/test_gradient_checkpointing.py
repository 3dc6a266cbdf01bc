"""model.gradient_checkpointing: the denoiser and the text encoders recompute their activations in the backward
pass, and the concept rows get the gradient they get without it."""

import pytest
import torch
from helpers import FAST, compose_cfg

from dti.run.build import build_concept, build_subject, build_trainer


def _concept_gradients(tiny: str, enabled: bool, tmp_path):
    """The gradient of the concept rows for one micro-batch, and how many module calls the denoiser and the text
    encoders made for its forward and backward pass."""
    cfg = compose_cfg([*FAST, f"model={tiny}", f"model.gradient_checkpointing={str(enabled).lower()}",
                       "train.resolution=32"])
    subject = build_subject(cfg)
    backbone, concept = build_concept(cfg, subject)
    trainer = build_trainer(cfg, tmp_path / f"{tiny}-{enabled}", backbone, concept, subject)
    calls = {"denoiser": 0, "text": 0}
    hooks = [module.register_forward_hook(lambda *_, part=part: calls.__setitem__(part, calls[part] + 1))
             for part, root in [("denoiser", backbone.denoiser), *(("text", s.encoder) for s in backbone.encoders)]
             for module in root.modules()]
    try:
        d = trainer.draw(trainer.prepare())
        cond = backbone.encode_text(d["ids"], d["augment"])
        backbone.loss(d["noisy"], d["t"], d["target"], cond, d["extras"]).backward()
    finally:
        for hook in hooks:
            hook.remove()
        concept.remove()  # the backbone goes back clean, for the next test to reuse
    return {k: t.weight.grad.clone() for k, t in concept.tables.items()}, calls


@pytest.mark.parametrize("tiny", ["tiny_sdxl", "tiny_wan"])  # CLIP + UNet; UMT5 (dropout 0.1) + 3-D DiT
def test_checkpointing_recomputes_and_keeps_the_concept_gradients(tiny, tmp_path):
    plain, plain_calls = _concept_gradients(tiny, False, tmp_path)
    checkpointed, calls = _concept_gradients(tiny, True, tmp_path)
    assert calls["denoiser"] > plain_calls["denoiser"] and calls["text"] > plain_calls["text"]  # recomputed
    for key, grad in plain.items():
        assert grad.abs().max() > 0
        assert torch.allclose(checkpointed[key], grad, rtol=1e-4, atol=1e-6 * grad.abs().max()), key


def test_gradient_checkpointing_must_be_a_boolean():
    from dti.core.errors import InputError
    from dti.run.validate import validate_config

    with pytest.raises(InputError, match="model.gradient_checkpointing='yes'"):
        validate_config(compose_cfg([*FAST, "model.gradient_checkpointing=yes"]))
