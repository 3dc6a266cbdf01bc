import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dti.core.errors import InputError
from dti.method.optim import AdamW, ProjectedAdamW, RiemannianSGD


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def algorithm1(v, g_data, mu, kappa, lr):
    """The paper's Algorithm 1 for one row, in float64 numpy."""
    g = g_data - kappa * mu
    g = g - (g @ v) * v
    g = g / np.linalg.norm(g)
    v = v - lr * g
    return v / np.linalg.norm(v)


def test_rows_stay_unit_norm_over_1000_steps():
    v = torch.nn.Parameter(unit(3, 64))
    opt = RiemannianSGD([v], lr=0.04, kappa=1e-2, prior=unit(3, 64, seed=1))
    gen = torch.Generator().manual_seed(2)
    for _ in range(1000):
        v.grad = torch.randn(3, 64, generator=gen) * 10
        opt.step()
    assert (v.detach().norm(dim=-1) - 1).abs().max() < 1e-6


def test_update_equals_algorithm_1_by_hand():
    v0, mu = unit(2, 16), unit(2, 16, seed=1)
    g_data = torch.randn(2, 16, generator=torch.Generator().manual_seed(3))
    v = torch.nn.Parameter(v0.clone())
    opt = RiemannianSGD([v], lr=0.1, kappa=0.3, prior=mu)
    v.grad = g_data.clone()
    opt.step()
    for row in range(2):
        expected = algorithm1(v0[row].double().numpy(), g_data[row].double().numpy(),
                              mu[row].double().numpy(), 0.3, 0.1)
        np.testing.assert_allclose(v[row].detach().double().numpy(), expected, atol=1e-6)
    assert not torch.allclose(v.detach(), v0)


def test_prior_alone_moves_direction_monotonically_toward_mu():
    mu = unit(1, 32, seed=1)
    v = torch.nn.Parameter(F.normalize(unit(1, 32, seed=4) - 0.9 * mu, dim=-1))
    opt = RiemannianSGD([v], lr=0.05, kappa=1e-4, prior=mu)
    cosines = []
    for _ in range(20):
        v.grad = torch.zeros_like(v)
        opt.step()
        cosines.append(F.cosine_similarity(v.detach(), mu).item())
    assert all(b > a for a, b in zip(cosines, cosines[1:]))
    assert cosines[-1] > cosines[0] + 0.3


def test_kappa_zero_or_no_prior_means_no_pull():
    for kwargs in (dict(kappa=0.0, prior=unit(2, 8, seed=1)), dict(kappa=0.5, prior=None)):
        v = torch.nn.Parameter(unit(2, 8))
        before = v.detach().clone()
        opt = RiemannianSGD([v], lr=0.1, **kwargs)
        v.grad = torch.zeros_like(v)
        opt.step()
        assert torch.allclose(v.detach(), before, atol=1e-7, rtol=0)  # only the retraction's rounding


def test_beta_uses_bias_corrected_ema_of_squared_norm():
    v0, mu = unit(1, 8), unit(1, 8, seed=1)
    grads = [torch.randn(1, 8, generator=torch.Generator().manual_seed(s)) for s in range(3)]
    v = torch.nn.Parameter(v0.clone())
    opt = RiemannianSGD([v], lr=0.1, kappa=0.2, prior=mu, beta=0.9, eps=0.0)
    ref, ema = v0[0].double().numpy(), 0.0
    for step, g_data in enumerate(grads, start=1):
        v.grad = g_data.clone()
        opt.step()
        g = g_data[0].double().numpy() - 0.2 * mu[0].double().numpy()
        g = g - (g @ ref) * ref
        ema = 0.9 * ema + 0.1 * (g @ g)
        ref = ref - 0.1 * g / np.sqrt(ema / (1 - 0.9**step))
        ref = ref / np.linalg.norm(ref)
    np.testing.assert_allclose(v[0].detach().double().numpy(), ref, atol=1e-6)
    # beta > 0 differs from plain normalisation after the first step
    w = torch.nn.Parameter(v0.clone())
    plain = RiemannianSGD([w], lr=0.1, kappa=0.2, prior=mu)
    for g_data in grads:
        w.grad = g_data.clone()
        plain.step()
    assert not torch.allclose(v.detach(), w.detach(), atol=1e-4)


def test_param_groups_each_with_their_own_prior():
    a, b = torch.nn.Parameter(unit(1, 8)), torch.nn.Parameter(unit(2, 4))
    mu_a, mu_b = unit(1, 8, seed=1), unit(2, 4, seed=2)
    opt = RiemannianSGD([{"params": [a], "prior": mu_a}, {"params": [b], "prior": mu_b}], lr=0.1, kappa=1.0)
    a.grad, b.grad = torch.zeros_like(a), torch.zeros_like(b)
    ca, cb = F.cosine_similarity(a.detach(), mu_a).sum(), F.cosine_similarity(b.detach(), mu_b).sum()
    opt.step()
    assert F.cosine_similarity(a.detach(), mu_a).sum() > ca and F.cosine_similarity(b.detach(), mu_b).sum() > cb


def test_bad_arguments():
    v = torch.nn.Parameter(unit(2, 8))
    with pytest.raises(InputError, match="optimizer.lr"):
        RiemannianSGD([v], lr=0.0)
    with pytest.raises(InputError, match="kappa"):
        RiemannianSGD([v], lr=0.1, kappa=-1e-4)
    with pytest.raises(ValueError, match="prior shape"):
        RiemannianSGD([v], lr=0.1, prior=unit(3, 8))
    with pytest.raises(InputError, match="optimizer.lr"):
        AdamW([v], lr=-1.0)


def test_projected_adamw_keeps_unit_rows_and_plain_adamw_does_not():
    g = torch.randn(2, 8, generator=torch.Generator().manual_seed(0))
    v, e = torch.nn.Parameter(unit(2, 8)), torch.nn.Parameter(unit(2, 8))
    projected, plain = ProjectedAdamW([v], lr=0.1), AdamW([e], lr=0.1)
    for _ in range(5):
        v.grad, e.grad = g.clone(), g.clone()
        projected.step()
        plain.step()
    assert (v.detach().norm(dim=-1) - 1).abs().max() < 1e-6
    assert (e.detach().norm(dim=-1) - 1).abs().max() > 1e-2


def test_adamw_prior_pull_is_added_to_the_gradient():
    mu = unit(1, 8, seed=1)
    pulled, free = torch.nn.Parameter(unit(1, 8)), torch.nn.Parameter(unit(1, 8))
    opt_pulled = AdamW([{"params": [pulled], "prior": mu}], lr=0.01, kappa=1.0)
    opt_free = AdamW([{"params": [free], "prior": mu}], lr=0.01, kappa=0.0)
    for _ in range(3):
        pulled.grad, free.grad = torch.zeros(1, 8), torch.zeros(1, 8)
        opt_pulled.step()
        opt_free.step()
    assert torch.equal(free.detach(), unit(1, 8))  # zero gradient, no pull: AdamW does not move
    assert F.cosine_similarity(pulled.detach(), mu) > F.cosine_similarity(unit(1, 8), mu)
