"""Nuclear-norm rank loss: analytic subgradient == autograd, it lowers the nuclear norm of the
trained matrices, random target choice is seeded/recorded, official compat keeps it inert."""
import pytest
import torch
from torch import nn

from sara import SaRA, eligible_matrices, nuclear_norm_loss, select, wrap
from sara.core.rank_loss import RankLoss, add_rank_grad, sparse_matrix

try:
    from test_core_utils import convnet, snapshot, train
except ImportError:
    from tests.test_core_utils import convnet, snapshot, train


def _net(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(12, 16), nn.Tanh(), nn.Linear(16, 10), nn.Tanh(),
                         nn.Linear(10, 3))


def _data(seed=0, n=64):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 12, generator=g), torch.randn(n, 3, generator=g))]


def _loss(m, batch):
    x, y = batch
    return (m(x) - y).pow(2).mean()


@pytest.mark.parametrize("which", ["linear", "conv"])
def test_analytic_subgradient_equals_autograd(which):
    if which == "linear":
        m = _net()
        sp = wrap(m, select(m, threshold=0.15))
        names = ["0.weight", "2.weight"]
    else:
        m = convnet()
        sp = wrap(m, select(m, threshold=0.4))
        names = ["conv1.weight", "conv2.weight"]  # viewed as [out, in*kh*kw]
    lam = 0.3
    add_rank_grad(sp, names, lam)
    analytic = sp.values.grad.clone()
    sp.values.grad = None
    # autograd of torch.linalg.matrix_norm(P, "nuc") w.r.t. the values, P = W ⊙ M
    loss = 0
    for n in names:
        w = m.get_parameter(n).detach().reshape(m.get_parameter(n).shape[0], -1)
        mask = sp.mask(n).reshape(w.shape).float()
        p = sparse_matrix(sp, n)  # built from the leaf
        assert torch.equal(p.detach(), w * mask)
        loss = loss + torch.linalg.matrix_norm(p, ord="nuc")
    (lam * loss).backward()
    torch.testing.assert_close(analytic, sp.values.grad, rtol=1e-5, atol=1e-7)
    # the differentiable helper gives the same
    sp.values.grad = None
    (lam * nuclear_norm_loss(sp, names)).backward()
    torch.testing.assert_close(analytic, sp.values.grad, rtol=1e-5, atol=1e-7)


def _nuclear(model, theta, names):
    sel = select(_net(), threshold=theta)
    return sum(float(torch.linalg.matrix_norm(
        model.get_parameter(n).detach() * sel.mask(n), ord="nuc")) for n in names)


def test_lambda_rank_lowers_nuclear_norm():
    theta, names = 0.15, ["0.weight", "2.weight"]
    out = {}
    for lam in (0.0, 0.05):
        m = _net()
        opt = SaRA(m, threshold=theta, lr=5e-3, lambda_rank=lam, rank_targets="all",
                   rank_min_side=4, progressive_iter=None, weight_decay=0)
        assert eligible_matrices(opt.sparse, 4) == names
        train(m, opt, _data(), _loss, 40)
        out[lam] = _nuclear(m, theta, names)
    start = _nuclear(_net(), theta, names)
    assert out[0.05] < out[0.0] - 0.05 * start, (start, out)


def test_random_target_is_seeded_recorded_and_eligible():
    def picks(seed):
        m = _net()
        opt = SaRA(m, threshold=0.15, lr=1e-3, lambda_rank=1e-3, rank_min_side=4,
                   progressive_iter=None, seed=seed)
        seq = []
        for _ in range(12):
            _loss(m, _data()[0]).backward()
            opt.step()
            opt.zero_grad()
            seq.append(opt.last_rank_targets)
            assert opt.last_rank_loss is not None and opt.last_rank_loss > 0
        return seq
    a, b, c = picks(0), picks(0), picks(1)
    assert a == b and a != c
    assert all(len(t) == 1 and t[0] in ("0.weight", "2.weight") for t in a)
    assert {t[0] for t in a} == {"0.weight", "2.weight"}


def test_default_eligibility_is_min_side_above_64():
    m = nn.Sequential(nn.Linear(80, 70), nn.Linear(70, 64), nn.Linear(64, 100))
    sp = wrap(m, select(m, threshold=0.05))
    assert eligible_matrices(sp) == ["0.weight"]  # 70x80 only; 64 is not > 64
    rl = RankLoss(1e-3)
    assert rl.choose(sp) == ["0.weight"]
    assert RankLoss(1e-3, targets="all", min_side=10).choose(sp) == ["0.weight", "1.weight",
                                                                      "2.weight"]
    with pytest.raises(ValueError, match="rank_targets"):
        RankLoss(1e-3, targets="some")


def test_rank_gradient_reaches_values_without_data_gradient():
    m = _net()
    opt = SaRA(m, threshold=0.15, lr=1e-2, lambda_rank=1.0, rank_targets="all",
               rank_min_side=4, progressive_iter=None, weight_decay=0)
    before = opt.sparse.values.detach().clone()
    opt.step()  # no backward at all: only the rank loss acts
    moved = opt.sparse.values.detach() != before
    s0, s2 = opt.sparse.slice("0.weight"), opt.sparse.slice("2.weight")
    assert bool(moved[s0].all()) and bool(moved[s2].all())
    assert not bool(moved[opt.sparse.slice("0.bias")].any())


def test_official_rank_loss_is_inert():
    runs = {}
    for lam in (0.0, 1.0):
        m = _net()
        opt = SaRA(m, threshold=0.15, lr=5e-3, lambda_rank=lam, rank_min_side=4,
                   progressive_iter=3, compat="official")
        train(m, opt, _data(), _loss, 6)
        runs[lam] = (snapshot(m), opt.last_rank_loss)
    assert runs[1.0][1] is not None and runs[1.0][1] > 0  # computed and logged ...
    assert all(torch.equal(runs[0.0][0][n], runs[1.0][0][n]) for n in runs[0.0][0])  # ... inert


def test_ours_rank_loss_is_not_inert():
    runs = {}
    for lam in (0.0, 1.0):
        m = _net()
        opt = SaRA(m, threshold=0.15, lr=5e-3, lambda_rank=lam, rank_min_side=4,
                   progressive_iter=None)
        train(m, opt, _data(), _loss, 3)
        runs[lam] = snapshot(m)
    assert not torch.equal(runs[0.0]["0.weight"], runs[1.0]["0.weight"]) or \
        not torch.equal(runs[0.0]["2.weight"], runs[1.0]["2.weight"])


def _sparse_p(rows, cols, density, seed, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    k = int(rows * cols * density)
    idx = torch.randperm(rows * cols, generator=g)[:k]
    vals = torch.randn(k, generator=g, dtype=dtype) * 1e-3
    return torch.zeros(rows * cols, dtype=dtype).index_put_((idx,), vals).view(rows, cols), idx


@pytest.mark.parametrize("shape,density", [((1024, 128), 0.058), ((128, 1024), 0.058),
                                           ((160, 160), 0.058), ((96, 200), 0.3),
                                           ((100, 160), 0.058)])
def test_gram_subgradient_matches_autograd_nuclear_norm(shape, density):
    """The subgradient against autograd of torch.linalg.matrix_norm(P, "nuc") in float64, at the
    trained entries, on sparse matrices like SaRA's: elongated ones through the Gram (float32
    Gram; float64 when ill conditioned), near-square ones through the SVD of the tall view."""
    from sara.core.rank_loss import nuclear_norm_and_subgradient

    p, idx = _sparse_p(*shape, density, seed=sum(shape))
    ref_p = p.double().requires_grad_(True)
    nuc_ref = torch.linalg.matrix_norm(ref_p, ord="nuc")
    nuc_ref.backward()
    nuc, g = nuclear_norm_and_subgradient(p)
    assert g.dtype == p.dtype and g.shape == p.shape
    ref = ref_p.grad.reshape(-1)[idx]
    got = g.reshape(-1)[idx].double()
    assert float(nuc) == pytest.approx(float(nuc_ref.detach()), rel=1e-6)
    square = max(shape) < 2 * min(shape)  # float32 SVD: as accurate as autograd's own
    assert float((got - ref).abs().max() / ref.abs().max()) < (1e-4 if square else 2e-6)
    # float64 in, float64 out: exact to float64 rounding
    nuc64, g64 = nuclear_norm_and_subgradient(p.double())
    assert float((g64.reshape(-1)[idx] - ref).abs().max() / ref.abs().max()) < 1e-8


def test_gram_subgradient_rank_deficient_is_minimum_norm():
    """Gram route: zero singular values contribute nothing, U_r V_rᵀ over the nonzero ones."""
    from sara.core.rank_loss import nuclear_norm_and_subgradient

    g = torch.Generator().manual_seed(0)
    p = (torch.randn(200, 3, generator=g) @ torch.randn(3, 50, generator=g)).double()
    u, s, vh = torch.linalg.svd(p, full_matrices=False)
    ref = u[:, :3] @ vh[:3]
    nuc, sub = nuclear_norm_and_subgradient(p)
    torch.testing.assert_close(sub, ref, rtol=0, atol=1e-9)
    assert float(nuc) == pytest.approx(float(s[:3].sum()), rel=1e-6)


def test_rank_loss_constrains_2d_weights_unless_conv_is_asked():
    m = convnet()
    sp = wrap(m, select(m, threshold=0.4))
    convs = [n for n in sp.names if len(sp.shapes[n]) == 4]
    assert convs
    assert not set(eligible_matrices(sp, min_side=1)) & set(convs)
    assert set(convs) <= set(eligible_matrices(sp, min_side=1, conv=True))
    with pytest.raises(TypeError, match="rank_conv"):
        RankLoss(1e-3, conv="yes")


def test_sara_default_and_official_reject_conv_rank_loss():
    from sara.methods.sara import SaRAMethod

    opt = SaRA(convnet(), threshold=0.4, lr=1e-3, rank_min_side=1)
    assert opt.rank.conv is False
    with pytest.raises(ValueError, match="rank_conv"):
        SaRA(convnet(), threshold=0.4, lr=1e-3, compat="official", rank_conv=True)
    with pytest.raises(ValueError, match="rank_loss_conv"):
        SaRAMethod(rank_loss_conv=True, compat="official")
    with pytest.raises(ValueError, match="rank_loss_conv"):
        SaRAMethod(rank_loss_conv="no")
