"""Unstructural backpropagation: gradients reach only the flat values, equal the masked dense
gradient, no dense .grad persists, and the wrapped model stays an ordinary module."""
import copy

import pytest
import torch
from torch import nn

import sara
from sara import get_sparse, merge, select, wrap

try:
    from test_core_utils import (conv_batch, conv_loss, convnet, mlp, mlp_batch, mlp_loss,
                                 snapshot, tiny_unet, unet_batch, unet_loss, unet_out)
except ImportError:
    from tests.test_core_utils import (conv_batch, conv_loss, convnet, mlp, mlp_batch, mlp_loss,
                                       snapshot, tiny_unet, unet_batch, unet_loss, unet_out)


def _check_grads(model, batch, loss_fn, theta, expect_kinds):
    ref = copy.deepcopy(model)
    sel = select(model, threshold=theta)
    sp = wrap(model, sel)
    loss_fn(model, batch).backward()
    loss_fn(ref, batch).backward()
    assert sp.values.grad is not None
    seen = set()
    for n, p in ref.named_parameters():
        idx = sel.indices[n].long()
        if idx.numel() == 0:
            continue
        seen.add(n)
        dense_masked = p.grad.reshape(-1)[idx]
        got = sp.values.grad[sp.slice(n)]
        torch.testing.assert_close(got, dense_masked, rtol=1e-5, atol=1e-7, msg=n)
    for kind in expect_kinds:
        assert any(n.endswith(kind) for n in seen), f"no selected entries in a {kind} tensor"
    # no dense gradient persists anywhere in the wrapped model
    assert all(p.grad is None for p in model.parameters())
    return sp


def test_grad_equals_masked_dense_grad_linear_layernorm_embedding_bias():
    m = mlp()
    _check_grads(m, mlp_batch(), mlp_loss, 0.4,
                 ["emb.weight", "fc1.weight", "fc1.bias", "norm.weight", "norm.bias",
                  "fc2.weight", "fc2.bias"])


def test_grad_equals_masked_dense_grad_conv_groupnorm():
    m = convnet()
    _check_grads(m, conv_batch(), conv_loss, 0.4,
                 ["conv1.weight", "conv1.bias", "norm.weight", "norm.bias", "conv2.weight"])


def test_grad_equals_masked_dense_grad_channels_last_conv():
    m = convnet().to(memory_format=torch.channels_last)
    x, y = conv_batch()
    _check_grads(m, (x.to(memory_format=torch.channels_last), y), conv_loss, 0.4,
                 ["conv1.weight", "conv2.weight"])


def test_grad_equals_masked_dense_grad_tiny_unet():
    m = tiny_unet()
    _check_grads(m, unet_batch(), unet_loss, 0.05, ["conv_in.weight", "to_q.weight"])


def test_sync_writes_exactly_the_values_and_nothing_else():
    # write_entries' index_copy_ path (contiguous weights) and its index_put_ path (channels_last)
    m = convnet().to(memory_format=torch.channels_last)
    sel = select(m, threshold=0.4)
    sp = wrap(m, sel)
    before = {n: p.detach().clone() for n, p in m.named_parameters()}
    with torch.no_grad():
        sp.values.copy_(torch.randn_like(sp.values))
    sp.sync()
    for n, p in m.named_parameters():
        expect = before[n].reshape(-1).clone()
        idx = sel.indices[n].long()
        if idx.numel():
            expect[idx] = sp.values.detach()[sp.slice(n)]
        assert torch.equal(p.detach().reshape(-1), expect), n
    assert any(not sp.param(n).is_contiguous() for n in sp.names)
    assert any(sp.param(n).is_contiguous() for n in sp.names)


def test_grads_accumulate_over_backward_calls():
    m = mlp()
    ref = copy.deepcopy(m)
    sp = wrap(m, select(m, threshold=0.4))
    for seed in (0, 1):
        mlp_loss(m, mlp_batch(seed)).backward()
        mlp_loss(ref, mlp_batch(seed)).backward()
    for n, p in ref.named_parameters():
        if n in sp.indices:
            torch.testing.assert_close(sp.values.grad[sp.slice(n)],
                                       p.grad.reshape(-1)[sp.indices[n].long()], rtol=1e-5,
                                       atol=1e-7)


def test_frozen_tensors_never_get_grad_and_flags():
    m = mlp()
    sel = select(m, threshold=0.4, params=["fc1.weight"])
    sp = wrap(m, sel)
    assert [n for n, p in m.named_parameters() if p.requires_grad] == ["fc1.weight"]
    mlp_loss(m, mlp_batch()).backward()
    assert all(p.grad is None for p in m.parameters())
    assert sp.values.grad.shape == sp.values.shape == (sel.count(),)
    assert sp.values.is_leaf and isinstance(sp.values, nn.Parameter)


def test_any_optimizer_syncs_through_forward_pre_hook():
    m = mlp()
    sp = wrap(m, select(m, threshold=0.4))
    w0 = snapshot(m)
    opt = torch.optim.SGD(sp.parameters(), lr=0.1)
    mlp_loss(m, mlp_batch()).backward()
    opt.step()
    # the weights are written lazily: by the next forward ...
    m(mlp_batch()[0])
    n = "fc1.weight"
    got = m.fc1.weight.detach().reshape(-1)[sp.indices[n].long()]
    assert torch.equal(got, sp.values.detach()[sp.slice(n)])
    assert not torch.equal(m.fc1.weight, w0[n])
    # ... or by state_dict()
    opt.step()
    sd = m.state_dict()
    assert torch.equal(sd[n].reshape(-1)[sp.indices[n].long()], sp.values.detach()[sp.slice(n)])


def test_wrapped_state_dict_loads_into_plain_copy():
    m = mlp()
    plain = copy.deepcopy(m)
    opt = sara.SaRA(m, threshold=0.4, lr=1e-2, lambda_rank=0, progressive_iter=None)
    for i in range(3):
        mlp_loss(m, mlp_batch(i)).backward()
        opt.step()
        opt.zero_grad()
    sd = m.state_dict()
    assert set(sd) == set(plain.state_dict())  # no extra keys from the wrapper
    plain.load_state_dict(sd)
    x = mlp_batch(5)[0]
    assert torch.equal(plain(x), m(x))


def test_to_eval_no_grad_and_dtype_change_still_train():
    m = convnet()
    opt = sara.SaRA(m, threshold=0.4, lr=1e-2, lambda_rank=0, progressive_iter=None)
    x, y = conv_batch()
    m.eval()
    with torch.no_grad():
        out = m(x)
    assert out.shape == (3, 4)
    m.train()
    m.to(torch.float64)
    conv_loss(m, (x.double(), y.double())).backward()
    assert opt.sparse.values.grad is not None
    opt.step()
    n = "conv1.weight"
    got = m.conv1.weight.detach().reshape(-1)[opt.sparse.indices[n].long()]
    torch.testing.assert_close(got, opt.sparse.values.detach()[opt.sparse.slice(n)].double())


def test_merge_leaves_plain_module():
    m = mlp()
    opt = sara.SaRA(m, threshold=0.4, lr=1e-2, lambda_rank=0, progressive_iter=None)
    mlp_loss(m, mlp_batch()).backward()
    opt.step()
    trained = snapshot(m)
    out = merge(m)
    assert out is m and get_sparse(m) is None and not hasattr(m, "_sara_sparse")
    assert len(m._forward_pre_hooks) == 0 and len(m._state_dict_pre_hooks) == 0
    assert len(m._load_state_dict_post_hooks) == 0
    assert all(not p._post_accumulate_grad_hooks for p in m.parameters()
               if p._post_accumulate_grad_hooks is not None)
    assert all(torch.equal(p, trained[n]) for n, p in m.named_parameters())
    assert not any(p.requires_grad for p in m.parameters())
    # a user re-enabling grads gets ordinary dense gradients, nothing is intercepted
    m.fc1.weight.requires_grad_(True)
    mlp_loss(m, mlp_batch()).backward()
    assert m.fc1.weight.grad is not None and m.fc1.weight.grad.shape == m.fc1.weight.shape
    assert all(p.grad is None for n, p in m.named_parameters() if n != "fc1.weight")
    assert merge(m) is m  # merging a plain model is a no-op


def test_merge_can_restore_requires_grad():
    m = mlp()
    m.fc2.bias.requires_grad_(False)
    wrap(m, select(m, threshold=0.4))
    merge(m, restore_requires_grad=True)
    assert {n: p.requires_grad for n, p in m.named_parameters()} == {
        n: n != "fc2.bias" for n, _ in m.named_parameters()}


def test_wrap_twice_and_empty_selection_raise():
    m = mlp()
    sel = select(m, threshold=0.4)
    wrap(m, sel)
    with pytest.raises(ValueError, match="already wrapped"):
        wrap(m, sel)
    other = mlp()
    empty = sara.Selection({n: torch.zeros(0, dtype=torch.int32) for n in sel.indices},
                           dict(sel.shapes))
    with pytest.raises(ValueError, match="empty"):
        wrap(other, empty)


def test_reselect_shrinks_and_retires():
    m = mlp()
    sp = wrap(m, select(m, threshold=0.4))
    opt = torch.optim.SGD(sp.parameters(), lr=0.5)
    mlp_loss(m, mlp_batch()).backward()
    opt.step()
    sp.sync()
    before = snapshot(m)
    keep = torch.zeros(sp.count(), dtype=torch.bool)
    keep[::2] = True
    old_values = sp.values.detach().clone()
    pos = sp.reselect(keep)
    assert torch.equal(pos, torch.nonzero(keep).squeeze(1))
    assert torch.equal(sp.values.detach(), old_values[keep]) and sp.values.is_leaf
    assert sp.count() == int(keep.sum())
    assert all(torch.equal(p, before[n]) for n, p in m.named_parameters())  # nothing reverted
    # retired + active = the original selection
    total = sum(int(i.numel()) for i, _, _ in sp.trained_entries().values())
    assert total == keep.numel()
    mlp_loss(m, mlp_batch()).backward()
    assert sp.values.grad.shape == (int(keep.sum()),)
    assert all(p.grad is None for p in m.parameters())


def test_unet_wrapped_no_grad_sampling_and_state_dict():
    m = tiny_unet()
    plain = copy.deepcopy(m)
    sp = wrap(m, select(m, threshold=0.05))
    with torch.no_grad():
        assert torch.equal(unet_out(m, unet_batch()), unet_out(plain, unet_batch()))
    plain.load_state_dict(m.state_dict())
    assert sp.count() > 0


def test_state_roundtrip_with_a_fully_retired_tensor():
    m = mlp()
    sp = wrap(m, select(m, threshold=0.4))
    opt = torch.optim.SGD(sp.parameters(), lr=0.5)
    mlp_loss(m, mlp_batch()).backward()
    opt.step()
    keep = torch.ones(sp.count(), dtype=torch.bool)
    keep[sp.slice("fc1.bias")] = False  # every entry of one tensor leaves the selection
    sp.reselect(keep)
    assert sp.count("fc1.bias") == 0 and not m.fc1.bias.requires_grad
    fresh = mlp()
    sp2 = sara.SparseParameters.from_state(fresh, sp.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), fresh.parameters()))
    a, b = sp.trained_entries(), sp2.trained_entries()
    assert a.keys() == b.keys()
    for n in a:
        assert all(torch.equal(x, y) for x, y in zip(a[n], b[n]))
    assert not fresh.fc1.bias.requires_grad
    sp2.restore_base()
    assert all(torch.equal(p, q) for p, q in zip(mlp().parameters(), fresh.parameters()))


def test_load_state_dict_into_wrapped_model_is_what_trains():
    m = mlp()
    opt = sara.SaRA(m, threshold=0.4, lr=1e-2, lambda_rank=0, progressive_iter=None)
    other = mlp(seed=3)
    m.load_state_dict(other.state_dict())
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), other.parameters()))
    n = "fc1.weight"
    assert torch.equal(opt.sparse.values.detach()[opt.sparse.slice(n)],
                       other.fc1.weight.detach().reshape(-1)[opt.sparse.indices[n].long()])
    x = mlp_batch()[0]
    assert torch.equal(m(x), other(x))  # the forward sync did not undo the load


# --------------------------------------------------------------------------------------------
# normalisation layers: weight and bias gradients are asked for together or not at all


class _NormNet(nn.Module):
    """The failing shapes of SD 2.0 at 768 px: 320 channels through GroupNorm(32, 320) and
    LayerNorm(320) over the tokens of a 1x1 projection."""

    def __init__(self, c=320):
        super().__init__()
        self.proj = nn.Conv2d(4, c, 1)
        self.gn = nn.GroupNorm(32, c)
        self.ln = nn.LayerNorm(c)
        self.out = nn.Linear(c, 4)

    def forward(self, x):
        h = self.gn(self.proj(x))
        h = h.flatten(2).transpose(1, 2)  # [batch, tokens, c]
        return self.out(self.ln(h))


def _norm_nodes(out):
    """Every Native{Layer,Group}NormBackward node of ``out``'s graph, with which of its weight
    and bias inputs autograd will ask a gradient for (next_functions[1], [2])."""
    found, seen, stack = [], set(), [out.grad_fn]
    while stack:
        fn = stack.pop()
        if fn is None or fn in seen:
            continue
        seen.add(fn)
        name = type(fn).__name__
        if name.startswith(("NativeLayerNormBackward", "NativeGroupNormBackward")):
            nf = fn.next_functions
            found.append((name, nf[1][0] is not None, nf[2][0] is not None))
        stack.extend(f for f, _ in fn.next_functions)
    return found


@pytest.mark.parametrize("trained", [("gn.bias", "ln.bias"), ("gn.weight", "ln.weight"),
                                     ("proj.weight",), ("gn.bias", "ln.weight")])
def test_norm_layers_get_both_affine_gradients_or_none(trained):
    """CUDA's layer-norm backward returns a bias gradient of shape [0] for more than 65,536 rows
    when only the bias requires grad ("NativeLayerNormBackward0 returned an invalid gradient at
    index 2 - got [0] but expected shape compatible with [320]"). Whatever the selection, no
    norm node may be asked for just one of its two affine gradients; the frozen partner's
    entries stay bit-exact and the trained entries get the dense gradient gathered."""
    torch.manual_seed(0)
    m = _NormNet()
    with torch.no_grad():
        m.gn.bias.normal_(0, 1e-3)
        m.ln.bias.normal_(0, 1e-3)
    ref = copy.deepcopy(m)
    x = torch.randn(2, 4, 8, 8)
    idx = {n: torch.arange(0, p.numel(), 3) for n, p in m.named_parameters() if n in trained}
    sel = sara.Selection(idx, {n: tuple(p.shape) for n, p in m.named_parameters()}, rule="test")
    sp = wrap(m, sel)
    frozen = {n: p.detach().clone() for n, p in m.named_parameters() if n not in trained}
    out = m(x)
    nodes = _norm_nodes(out)
    assert {n for n, _, _ in nodes} == {"NativeLayerNormBackward0", "NativeGroupNormBackward0"}
    for name, w, b in nodes:
        assert w == b, f"{name} asked for only one affine gradient (weight {w}, bias {b})"
    out.square().mean().backward()
    ref(x).square().mean().backward()
    assert all(p.grad is None for p in m.parameters())
    for n, p in ref.named_parameters():
        if n in trained:
            torch.testing.assert_close(sp.values.grad[sp.slice(n)],
                                       p.grad.reshape(-1)[idx[n]], rtol=1e-5, atol=1e-7)
    torch.optim.SGD(sp.parameters(), lr=0.1).step()
    sp.sync()
    for n, p in m.named_parameters():
        if n in frozen:
            assert torch.equal(p.detach(), frozen[n]), n
    merge(m)
    assert not any(p.requires_grad for p in m.parameters())


def test_norm_partner_released_when_reselection_empties_its_pair():
    m = _NormNet()
    sel = sara.Selection({"ln.bias": torch.arange(4)},
                         {n: tuple(p.shape) for n, p in m.named_parameters()}, rule="test")
    sel.indices["proj.weight"] = torch.arange(4)
    sp = wrap(m, sel)
    assert m.ln.weight.requires_grad and m.ln.bias.requires_grad
    keep = torch.ones(8, dtype=torch.bool)
    keep[sp.slice("ln.bias")] = False
    sp.reselect(keep)
    assert not m.ln.weight.requires_grad and not m.ln.bias.requires_grad
    m(torch.randn(1, 4, 2, 2)).sum().backward()
    assert all(p.grad is None for p in m.parameters())


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_layer_norm_bias_only_large_rows_on_cuda():
    """The failing GPU case itself: 8 x 96 x 96 = 73,728 rows of 320 channels, bias trained."""
    m = nn.Sequential(nn.LayerNorm(320)).cuda()
    sel = sara.Selection({"0.bias": torch.arange(0, 320, 2)}, {"0.weight": (320,), "0.bias": (320,)},
                         rule="test")
    sp = wrap(m, sel)
    x = torch.randn(8, 96 * 96, 320, device="cuda")
    m(x).square().mean().backward()
    assert sp.values.grad is not None and torch.isfinite(sp.values.grad).all()
