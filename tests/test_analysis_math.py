"""sara.analysis_math: subspace similarity (SPEC Eq. 11), amplification (Table 10), pruning."""
from __future__ import annotations

import json

import numpy as np
import pytest

from sara.analysis_math import (amplification_factor, amplification_report, prune_array, prune_small,
                                subspace_report, subspace_similarity, subspace_similarity_from_u,
                                subspace_similarity_grid)

RNG = np.random.default_rng(0)


def test_phi_of_a_matrix_with_itself_is_one():
    a = RNG.standard_normal((20, 12))
    for i in (1, 3, 12):
        assert subspace_similarity(a, a, i, i) == pytest.approx(1.0, abs=1e-12)


def test_phi_of_orthogonal_subspaces_is_zero():
    e = np.eye(6)
    a = e[:, :3] @ np.diag([3.0, 2.0, 1.0])   # column space span(e1, e2, e3)
    b = e[:, 3:] @ np.diag([3.0, 2.0, 1.0])   # span(e4, e5, e6)
    assert subspace_similarity(a, b, 3, 3) == pytest.approx(0.0, abs=1e-12)
    assert np.allclose(subspace_similarity_grid(a, b, 3, 3), 0.0)


def test_phi_hand_computed():
    s = 1 / np.sqrt(2)
    ua = np.array([[1, 0], [0, 1], [0, 0]], float)       # span(e1, e2)
    ub = np.array([[s, 0], [0, 0], [s, 1]], float)        # (e1 + e3)/√2, e3
    # ||U_A^T u_b1||² = 1/2, min(2, 1) = 1
    assert subspace_similarity_from_u(ua, ub, 2, 1) == pytest.approx(0.5)
    # ||U_A^T U_B||_F² = 1/2 + 0, min(2, 2) = 2
    assert subspace_similarity_from_u(ua, ub, 2, 2) == pytest.approx(0.25)
    assert subspace_similarity_from_u(ua, ub, 1, 1) == pytest.approx(0.5)


def test_grid_matches_pointwise_and_is_bounded():
    a, b = RNG.standard_normal((16, 10)), RNG.standard_normal((16, 8))
    g = subspace_similarity_grid(a, b, 6, 5)
    assert g.shape == (6, 5)
    for i in range(1, 7):
        for j in range(1, 6):
            assert g[i - 1, j - 1] == pytest.approx(subspace_similarity(a, b, i, j))
    assert (g >= -1e-12).all() and (g <= 1 + 1e-12).all()


def test_phi_bad_dims():
    a = RNG.standard_normal((5, 3))
    with pytest.raises(ValueError, match="positive integer"):
        subspace_similarity(a, a, 0, 1)
    with pytest.raises(ValueError, match="exceeds"):
        subspace_similarity(a, a, 4, 1)
    with pytest.raises(ValueError, match="different spaces"):
        subspace_similarity(a, RNG.standard_normal((6, 3)), 1, 1)


def test_amplification_hand_computed():
    w = np.diag([3.0, 2.0, 1.0])
    d = np.zeros((3, 3))
    d[2, 2] = 0.5                       # ΔW along the direction W emphasises least
    r = amplification_factor(d, w, 1)
    assert r["delta_norm"] == pytest.approx(0.5)
    assert r["proj_norm"] == pytest.approx(1.0)         # Uᵀ W V = e3ᵀ W e3 = 1
    assert r["own_proj_norm"] == pytest.approx(3.0)     # W's own top-1 direction
    assert r["amplification"] == pytest.approx(0.5)
    d2 = np.zeros((3, 3))
    d2[0, 0] = 0.5                      # along W's top direction: small amplification
    assert amplification_factor(d2, w, 1)["amplification"] == pytest.approx(0.5 / 3)


def test_amplification_bad_input():
    with pytest.raises(ValueError, match="same shape"):
        amplification_factor(np.ones((2, 3)), np.ones((3, 2)), 1)
    with pytest.raises(ValueError, match="rank r"):
        amplification_factor(np.ones((2, 2)), np.ones((2, 2)), 3)


def test_reports_are_json_and_select_layers():
    w0 = {"down.attn.to_k.weight": RNG.standard_normal((8, 8)), "mid_block.attn1.to_k.weight": RNG.standard_normal((8, 8)),
          "mid_block.attn1.to_k.bias": RNG.standard_normal(8), "mid_block.conv.weight": RNG.standard_normal((4, 2, 3, 3))}
    w1 = {k: v + 0.01 * RNG.standard_normal(v.shape) for k, v in w0.items()}
    rep = subspace_report(w0, w1, max_dim=4, delta_u_dim=3)
    assert [r["layer"] for r in rep] == ["mid_block.attn1.to_k.weight"]
    assert np.asarray(rep[0]["phi"]).shape == (4, 4) and np.asarray(rep[0]["delta_u"]).shape == (8, 3)
    assert np.asarray(rep[0]["phi"])[0, 0] > 0.9  # a small update keeps the top direction
    json.dumps(rep)
    conv = subspace_report(w0, w1, patterns=["*conv.weight"], max_dim=8)
    assert conv[0]["shape"] == [4, 18] and np.asarray(conv[0]["phi"]).shape == (4, 4)
    amp = amplification_report(w0, w1, patterns=["*to_k.weight"], ranks=(1, 4, 64))
    assert sorted({(r["layer"], r["r"]) for r in amp}) == [(n, r) for n in ("down.attn.to_k.weight",
                                                                             "mid_block.attn1.to_k.weight") for r in (1, 4)]
    json.dumps(amp)


def test_subspace_report_random_update_of_the_learned_norm():
    """phi_w0_random is W0 plus a Gaussian update as large as W1 - W0: for a W1 that is itself W0
    plus Gaussian noise the two grids agree, whatever the noise level; a large update lowers it."""
    rng = np.random.default_rng(7)
    w0 = {"mid_block.attn1.to_k.weight": rng.standard_normal((64, 64))}
    for eps, close_to_one in ((0.01, True), (1.0, False)):
        w1 = {k: v + eps * rng.standard_normal(v.shape) for k, v in w0.items()}
        rec = subspace_report(w0, w1, max_dim=8)[0]
        assert rec["update_norm"] == pytest.approx(np.linalg.norm(w1["mid_block.attn1.to_k.weight"] -
                                                                  w0["mid_block.attn1.to_k.weight"]))
        assert np.mean(rec["phi_w0_random"]) == pytest.approx(np.mean(rec["phi"]), abs=0.1)
        assert (np.mean(rec["phi_w0_random"]) > 0.95) == close_to_one
        assert np.mean(rec["phi_random"]) < 0.3  # a standalone random matrix shares little with W0


def test_prune_array():
    w = np.array([[0.001, -0.5], [-0.0001, 0.002]])
    p, n = prune_array(w, 0.002)
    assert n == 2 and p.tolist() == [[0.0, -0.5], [0.0, 0.002]]
    assert w[0, 0] == 0.001  # a copy
    assert prune_array(w, 0.0)[1] == 0


def test_prune_small_on_a_module_copy():
    torch = pytest.importorskip("torch")
    m = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.LayerNorm(3))
    with torch.no_grad():
        m[0].weight.copy_(torch.tensor([[1e-4, 0.5, -2e-4, 0.1]] * 3))
        m[0].bias.copy_(torch.tensor([1e-5, 1.0, -1.0]))
    before = {k: v.clone() for k, v in m.state_dict().items()}
    pruned, info = prune_small(m, 1e-3)
    for k, v in m.state_dict().items():  # the original is untouched
        assert torch.equal(v, before[k])
    assert (pruned[0].weight[:, [0, 2]] == 0).all() and (pruned[0].weight[:, 1] == 0.5).all()
    assert pruned[0].bias[0] == 0 and pruned[0].bias[1] == 1.0
    # 6 weights + 1 bias, + LayerNorm's 3 zero biases (|0| < θ counts)
    assert info["pruned"] == 10 and info["total"] == 12 + 3 + 3 + 3
    assert info["fraction"] == pytest.approx(10 / 21)
    only_w, info_w = prune_small(m, 1e-3, params=["0.weight"])
    assert info_w["total"] == 12 and only_w[0].bias[0] == m[0].bias[0]
    with pytest.raises(ValueError):
        prune_small(m, -1.0)
