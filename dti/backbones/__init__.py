"""Backbone adapters: one module per model family, each implementing `dti.backbones.base.Backbone`."""
