"""Helpers shared by test modules."""


def frozen_state(backbone):
    """Every frozen weight of a backbone's text encoders and denoiser, under the checkpoint's names (the wrapped
    lookup keeps the frozen vocabulary as `.frozen`)."""
    modules = [(slot.key, slot.encoder) for slot in backbone.encoders]
    modules.append(("denoiser", getattr(backbone, "unet", None) or backbone.transformer))
    return {f"{name}.{k}".replace(".frozen.weight", ".weight"): v.detach().clone()
            for name, module in modules for k, v in module.state_dict().items()}
