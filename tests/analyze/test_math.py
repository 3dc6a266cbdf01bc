"""The analyses' measurements on inputs built by hand, against closed forms: slerp, nearest tokens, the block angle
and Lemma 2's bound, and the position probe's accuracy as the token's norm grows."""

import math

import pytest
import torch
from torch import nn

import dti
from dti.analyze.anatomy import position_table
from dti.analyze.angles import block_angles, lemma2_bound_deg
from dti.analyze.neighbours import nearest
from dti.analyze.probe import accuracy, probe_parts, train_probe
from dti.analyze.settings import ProbeSettings
from dti.analyze.spherical import blend, lerp, nslerp, slerp
from dti.method.slots import TextEncoderSlot


def rows_of_norm(n, d, norm, seed):
    g = torch.Generator().manual_seed(seed)
    return nn.functional.normalize(torch.randn(n, d, generator=g), dim=-1) * norm


def test_slerp_ends_norm_and_midpoint():
    a, b = rows_of_norm(5, 16, 0.39, 0), rows_of_norm(5, 16, 0.39, 1)
    assert torch.allclose(slerp(a, b, 0.0), a, atol=1e-6) and torch.allclose(slerp(a, b, 1.0), b, atol=1e-6)
    for t in torch.linspace(0, 1, 11).tolist():
        assert torch.allclose(slerp(a, b, t).norm(dim=-1), torch.full((5,), 0.39), atol=1e-6)  # on the sphere
    # closed form of the midpoint of two rows of one norm: the normalised sum at that norm
    closed = nn.functional.normalize(a + b, dim=-1) * 0.39
    assert torch.allclose(slerp(a, b, 0.5), closed, atol=1e-6)
    # and the angle to either end is half the angle between them
    half = torch.arccos(nn.functional.cosine_similarity(a, b, dim=-1)) / 2
    assert torch.allclose(torch.arccos(nn.functional.cosine_similarity(slerp(a, b, 0.5), a, dim=-1)), half,
                          atol=1e-4)
    assert torch.allclose(dti.slerp(a, b, 0.3), slerp(a, b, 0.3))  # the API's function is this one


def test_lerp_shrinks_and_nslerp_interpolates_the_norm():
    a, b = rows_of_norm(3, 8, 1.0, 2), rows_of_norm(3, 8, 1.0, 3)
    assert (lerp(a, b, 0.5).norm(dim=-1) < 1 - 1e-3).all()  # the chord's midpoint is inside the sphere
    big = rows_of_norm(3, 8, 20.0, 4)  # a TI-like norm
    mixed = nslerp(a, big, 0.25)
    assert torch.allclose(mixed.norm(dim=-1), torch.full((3,), 0.75 * 1 + 0.25 * 20), atol=1e-4)
    assert torch.allclose(nn.functional.normalize(mixed, dim=-1),
                          nn.functional.normalize(slerp(a, big / 20, 0.25), dim=-1), atol=1e-5)
    same = slerp(a, a.clone(), 0.4)  # parallel rows: the line, no division by sin 0
    assert torch.isfinite(same).all() and torch.allclose(same, a, atol=1e-6)
    assert set(blend({"k": a}, {"k": b}, 0.5, "lerp")) == {"k"}


def test_nearest_by_cosine_and_by_distance_differ():
    vocab = torch.tensor([[10.0, 0.5], [0.5, 0.5], [1.8, -1.0], [-2.0, 0.0]])  # a, b, c, d
    found = nearest(vocab, torch.tensor([2.0, 0.0]), 4)
    assert found["cosine_ids"] == [0, 2, 1, 3]  # a points the same way though it is far
    assert found["euclidean_ids"] == [2, 1, 3, 0]  # c is closest, a (norm 10) is last
    assert found["cosine"][0] == pytest.approx(10 / math.hypot(10, 0.5), abs=1e-6)
    assert found["distance"][0] == pytest.approx(math.hypot(0.2, 1.0), abs=1e-6)
    assert nearest(vocab, torch.tensor([2.0, 0.0]), 2, exclude=[0, 2])["cosine_ids"] == [1, 3]


class PreNorm(nn.Module):
    """x + f(LN(x)); f = bound · tanh(W ·)/sqrt(d), so ‖f‖ ≤ bound whatever x is."""

    def __init__(self, d, bound, weight=None, bias=None):
        super().__init__()
        self.norm, self.linear, self.bound, self.d = nn.LayerNorm(d), nn.Linear(d, d), bound, d
        if weight is not None:
            with torch.no_grad():
                self.linear.weight.copy_(weight)
                self.linear.bias.copy_(bias)

    def forward(self, x):
        update = self.linear(self.norm(x))
        return x + (update if self.bound is None else self.bound * torch.tanh(update) / math.sqrt(self.d))


def test_block_angle_equals_the_analytic_angle():
    d, c = 8, 0.7
    offset = torch.zeros(d)
    offset[-1] = c  # the block adds c along the last axis, orthogonal to inputs that have none of it
    layers = nn.ModuleList([PreNorm(d, None, torch.zeros(d, d), offset)])
    x = torch.zeros(1, 4, d)
    x[0, :, : d - 1] = rows_of_norm(4, d - 1, 1.0, 5) * torch.tensor([0.5, 1.0, 2.0, 8.0])[:, None]
    angles = block_angles(layers, lambda: layers[0](x), [0, 1, 2, 3])
    expected = [math.degrees(math.atan(c / n)) for n in (0.5, 1.0, 2.0, 8.0)]
    assert angles.shape == (1, 4)
    assert angles[0].tolist() == pytest.approx(expected, abs=1e-4)


def test_lemma2_angle_stays_below_arcsin_bound_and_shrinks_with_the_norm():
    torch.manual_seed(0)
    d, bound = 16, 1.0
    layers = nn.ModuleList([PreNorm(d, bound)])
    x0 = rows_of_norm(6, d, 1.0, 6)[None]
    means = []
    for scale in (1.5, 2, 4, 8, 16, 32):
        angles = block_angles(layers, lambda s=scale: layers[0](s * x0), list(range(6)))[0]
        assert (angles <= lemma2_bound_deg(bound, scale) + 1e-4).all(), (scale, angles)
        assert (angles > 0).all()
        means.append(float(angles.mean()))
    assert all(later < earlier for earlier, later in zip(means, means[1:]))  # LN(sx) = LN(x): same f, longer x


def tiny_clip_slot(positions=8, vocab=256, d=32):
    """A one-layer CLIP text encoder whose tokens are short (0.1) beside its position embeddings (0.4)."""
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    model = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=d, intermediate_size=37, num_hidden_layers=1,
                                         num_attention_heads=4, max_position_embeddings=positions, bos_token_id=0,
                                         eos_token_id=1, pad_token_id=1))
    slot = TextEncoderSlot("clip", None, model, "learned_embeds.safetensors", positions, vocab)
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(rows_of_norm(vocab, d, 0.1, 7))
        position_table(slot).weight.copy_(rows_of_norm(positions, d, 0.4, 8))
    return slot


def test_position_probe_is_accurate_unscaled_and_fails_as_the_norm_grows():
    parts = probe_parts(tiny_clip_slot())
    mlp = train_probe(parts, ProbeSettings(steps=300, batch_size=128, hidden=64, lr=3e-3), seed=0)
    tokens = parts.vocab[:128]
    scores = [accuracy(mlp, parts, m * tokens) for m in (1, 2, 4, 8, 16)]
    assert scores[0] >= 0.95, scores
    assert scores[-1] <= scores[0] - 0.4, scores
    assert all(later <= earlier + 0.05 for earlier, later in zip(scores, scores[1:])), scores
    # the official variant: |e| = s at position 0 only
    unit = nn.functional.normalize(tokens, dim=-1)
    assert accuracy(mlp, parts, 0.1 * unit, [0]) >= 0.9 > accuracy(mlp, parts, 16 * unit, [0])


def test_encoders_without_absolute_positions_have_no_probe_parts():
    from transformers import Gemma2Config, Gemma2Model

    gemma = Gemma2Model(Gemma2Config(vocab_size=64, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                     num_attention_heads=2, num_key_value_heads=1, head_dim=8))
    assert probe_parts(TextEncoderSlot("gemma2", None, gemma, "x", 8, 64)) is None
