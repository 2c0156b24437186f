"""CKA / HSIC identities and invariances; kernels, median bandwidth and kernel-regression limits."""

from __future__ import annotations

import pytest
import torch

from lix_train.losses.cka import hsic, kernel_cka, linear_cka
from lix_train.losses.kernels import gaussian_kernel, kernel_regression, laplace_kernel, median_bandwidth


def _features(n=40, c=6, b=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, n, c, generator=g, dtype=torch.float64)


def _orthogonal(c, seed=1):
    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(c, c, generator=g, dtype=torch.float64))
    return q


def test_cka_of_a_representation_with_itself_is_one():
    x = _features()
    torch.testing.assert_close(linear_cka(x, x), torch.ones(2, dtype=torch.float64))
    k = gaussian_kernel(x, x)
    torch.testing.assert_close(kernel_cka(k, k), torch.ones(2, dtype=torch.float64))


def test_linear_cka_is_invariant_to_rotation_scaling_and_offset():
    x, y = _features(seed=0), _features(c=9, seed=2)
    base = linear_cka(x, y)
    torch.testing.assert_close(linear_cka(x @ _orthogonal(6) * 3.7 + 5.0, y), base)
    torch.testing.assert_close(linear_cka(x, 0.01 * y @ _orthogonal(9, seed=4)), base)
    assert torch.all((base > 0) & (base < 1))


def test_feature_space_linear_cka_equals_gram_matrix_cka():
    x, y = _features(seed=0), _features(c=3, seed=5)
    gram = kernel_cka(x @ x.transpose(1, 2), y @ y.transpose(1, 2))
    torch.testing.assert_close(linear_cka(x, y), gram)


def test_hsic_matches_the_trace_formula_with_an_explicit_centring_matrix():
    x, y = _features(n=12), _features(n=12, seed=3)
    k, l = laplace_kernel(x, x, 2.0), gaussian_kernel(y, y, 1.5)
    n = 12
    h = torch.eye(n, dtype=torch.float64) - torch.ones(n, n, dtype=torch.float64) / n
    expected = torch.stack([torch.trace(k[i] @ h @ l[i] @ h) for i in range(2)]) / (n - 1) ** 2
    torch.testing.assert_close(hsic(k, l), expected)


def test_gradcheck_linear_cka():
    x, y = _features(n=8, c=3, b=1), _features(n=8, c=4, b=1, seed=7)
    assert torch.autograd.gradcheck(linear_cka, (x.requires_grad_(True), y.requires_grad_(True)))


def test_cka_shape_errors():
    with pytest.raises(ValueError, match="same"):
        linear_cka(torch.randn(2, 10, 3), torch.randn(2, 11, 3))
    with pytest.raises(ValueError, match="Gram"):
        hsic(torch.randn(4, 4), torch.randn(5, 5))


def test_kernels_match_their_formulas():
    a, b = _features(n=5, c=3), _features(n=7, c=3, seed=9)
    d = torch.cdist(a, b)
    torch.testing.assert_close(laplace_kernel(a, b, 1.3), torch.exp(-d / 1.3))
    torch.testing.assert_close(gaussian_kernel(a, b, 0.8), torch.exp(-d**2 / (2 * 0.8**2)))
    assert laplace_kernel(a, b).shape == (2, 5, 7)
    with pytest.raises(ValueError, match="point dimensions differ"):
        laplace_kernel(a, _features(n=7, c=4))


def test_median_bandwidth_is_the_detached_median_per_batch_item():
    d = torch.tensor([[[1.0, 5.0], [3.0, 9.0]], [[2.0, 2.0], [4.0, 8.0]]], requires_grad=True)
    sigma = median_bandwidth(d)
    assert sigma.shape == (2, 1, 1) and not sigma.requires_grad
    assert sigma.flatten().tolist() == [3.0, 2.0]  # lower median of an even count, as torch.median


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
def test_kernel_regression_small_bandwidth_returns_the_nearest_neighbour(kind):
    keys, values = _features(n=10, c=4), _features(n=10, c=2, seed=3)
    queries = keys[:, [3, 7, 0]] + 1e-3
    out = kernel_regression(queries, keys, values, kind, sigma=1e-4)
    torch.testing.assert_close(out, values[:, [3, 7, 0]])
    # Self-matching: the regression of a set on itself is the identity.
    torch.testing.assert_close(kernel_regression(keys, keys, values, kind, sigma=1e-4), values)


@pytest.mark.parametrize("kind", ["laplace", "gaussian"])
def test_kernel_regression_large_bandwidth_returns_the_mean(kind):
    keys, values = _features(n=10, c=4), _features(n=10, c=2, seed=3)
    out = kernel_regression(_features(n=4, c=4, seed=8), keys, values, kind, sigma=1e9)
    torch.testing.assert_close(out, values.mean(dim=1, keepdim=True).expand(-1, 4, -1))


def test_kernel_regression_rows_are_convex_combinations():
    keys, values = _features(n=10, c=4), torch.ones(2, 10, 1, dtype=torch.float64)
    torch.testing.assert_close(kernel_regression(keys, keys, values), values)


def test_effective_count_is_one_for_a_point_mass_and_k_for_uniform_weights():
    from lix_train.losses.kernels import effective_count, regression_weights

    w = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.5, 0.5, 0.0, 0.0]])
    torch.testing.assert_close(effective_count(w), torch.tensor([1.0, 4.0, 2.0]))
    g = torch.Generator().manual_seed(0)
    k = torch.randn(7, 5, generator=g)
    q = k[:3] + 1e-3 * torch.randn(3, 5, generator=g)  # each query next to one key, far from the others
    sharp, flat = (effective_count(regression_weights(q, k, "laplace", sigma_scale=s)) for s in (0.01, 100.0))
    assert torch.all(sharp < 1.01) and torch.all(flat > 6.9)
