"""Weight gradients at the trained entries only: equal to the dense gradient gathered (linear,
1x1 and 3x3/strided conv, fp32 and bf16), the weights get no dense gradient, training is the
same as on the dense path, and the layers go back to plain modules on merge."""
import copy

import pytest
import torch
from torch import nn

import sara
from sara import merge, wrap
from sara.core.sampled_grad import CROSSOVER_DENSITY, SampledLayer, crossover_for


class _Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 16, 3, padding=1)
        self.down = nn.Conv2d(16, 24, 3, stride=2, padding=1)
        self.proj = nn.Conv2d(24, 32, 1)
        self.lin = nn.Linear(32, 40)
        self.out = nn.Linear(40, 5, bias=False)

    def forward(self, x):
        h = self.proj(torch.tanh(self.down(torch.tanh(self.conv1(x)))))
        h = h.flatten(2).transpose(1, 2)  # [batch, tokens, 32]
        return self.out(torch.tanh(self.lin(h)))


def _selection(model, density, seed=0):
    g = torch.Generator().manual_seed(seed)
    idx, shapes = {}, {}
    for n, p in model.named_parameters():
        shapes[n] = tuple(p.shape)
        k = max(1, int(p.numel() * density))
        idx[n] = torch.randperm(p.numel(), generator=g)[:k].sort().values
    return sara.Selection(idx, shapes, rule="test")


def _grads(dtype, sampled, density=0.1, input_grad=False):
    torch.manual_seed(0)
    m = _Net().to(dtype)
    x = torch.randn(2, 3, 10, 10, dtype=dtype, requires_grad=input_grad)
    sp = wrap(m, _selection(m, density), sampled_wgrad=1.0 if sampled else None)
    out = m(x)
    out.float().square().mean().backward()
    return m, sp, x


@pytest.mark.parametrize("input_grad", [False, True])
def test_sampled_weight_gradient_equals_dense_gathered_fp32(input_grad):
    m_s, sp_s, x_s = _grads(torch.float32, True, input_grad=input_grad)
    m_d, sp_d, x_d = _grads(torch.float32, False, input_grad=input_grad)
    assert set(sp_s.sampled_layers) == {"conv1.weight", "down.weight", "proj.weight",
                                        "lin.weight", "out.weight"}
    assert sp_d.sampled_layers == []
    assert all(p.grad is None for p in m_s.parameters())
    for n in sp_s.names:
        a, b = sp_s.values.grad[sp_s.slice(n)], sp_d.values.grad[sp_d.slice(n)]
        torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-6 * float(b.abs().max()), msg=n)
    if input_grad:
        torch.testing.assert_close(x_s.grad, x_d.grad, rtol=1e-6, atol=1e-8)


def test_sampled_weight_gradient_bf16_tolerance():
    m_s, sp_s, _ = _grads(torch.bfloat16, True)
    m_d, sp_d, _ = _grads(torch.bfloat16, False)
    for n in sp_s.names:
        a, b = sp_s.values.grad[sp_s.slice(n)].float(), sp_d.values.grad[sp_d.slice(n)].float()
        assert float((a - b).abs().max()) <= 2e-2 * float(b.abs().max()) + 1e-6, n


def test_sampled_path_trains_like_dense_and_merges_to_plain_modules():
    def run(sampled):
        torch.manual_seed(0)
        m = _Net()
        opt = sara.SaRA(m, selection=_selection(m, 0.1), lr=1e-2, lambda_rank=0,
                        progressive_iter=None, sampled_wgrad=1.0 if sampled else None)
        for i in range(3):
            x = torch.randn(2, 3, 10, 10, generator=torch.Generator().manual_seed(i))
            m(x).square().mean().backward()
            opt.step()
            opt.zero_grad()
        return m, opt

    m_s, o_s = run(True)
    m_d, o_d = run(False)
    torch.testing.assert_close(o_s.sparse.values, o_d.sparse.values, rtol=1e-5, atol=1e-7)
    merge(m_s)
    assert not any("forward" in mod.__dict__ for mod in m_s.modules())
    x = torch.randn(1, 3, 10, 10)
    assert torch.isfinite(m_s(x)).all()


def test_crossover_picks_layers_by_density():
    torch.manual_seed(0)
    m = _Net()
    sp = wrap(m, _selection(m, 0.05), sampled_wgrad=0.2)
    assert len(sp.sampled_layers) == 5
    merge(m)
    sp = wrap(m, _selection(m, 0.05), sampled_wgrad=0.01)
    assert sp.sampled_layers == []
    assert crossover_for(torch.device("cpu"), None) == 0.0
    merge(m)
    sp = wrap(m, _selection(m, 0.005), sampled_wgrad="auto")  # each layer kind's own crossover
    expected = {f"{n}.weight" for n, mod in m.named_children()
                if sp.count(f"{n}.weight") / mod.weight.numel() < crossover_for("cpu", "auto", mod)}
    assert set(sp.sampled_layers) == expected
    assert crossover_for("cpu", "auto", m.conv1) == CROSSOVER_DENSITY["cpu"]["kxk"] > 0.005
    assert crossover_for("cpu", "auto", m.proj) == crossover_for("cpu", "auto") > 0.005
    assert crossover_for("cuda", "auto", m.conv1) == 0.0
    with pytest.raises(ValueError, match="sampled_wgrad"):
        crossover_for(torch.device("cpu"), 2.0)


def test_reselection_rebuilds_sampled_layers():
    torch.manual_seed(0)
    m = _Net()
    ref = copy.deepcopy(m)
    sp = wrap(m, _selection(m, 0.1), sampled_wgrad=1.0)
    keep = torch.rand(sp.count(), generator=torch.Generator().manual_seed(1)) < 0.5
    sp.reselect(keep)
    x = torch.randn(2, 3, 10, 10)
    m(x).square().mean().backward()
    ref_sp = wrap(ref, sara.Selection({n: sp.indices[n] for n in sp.names},
                                      {n: sp.shapes[n] for n in sp.names}, rule="test"),
                  sampled_wgrad=None)
    with torch.no_grad():
        ref_sp.values.copy_(sp.values)
    ref_sp.sync()
    ref(x).square().mean().backward()
    torch.testing.assert_close(sp.values.grad, ref_sp.values.grad, rtol=1e-6, atol=1e-9)


def test_sara_method_passes_sampled_wgrad_and_initial_storage():
    from sara.methods.sara import SaRAMethod

    m = SaRAMethod(threshold=0.05, lambda_rank=0, progressive_iter=None, lr=1e-3,
                   sampled_wgrad=1.0, initial_storage="device")
    net = _Net()
    m.apply(net)
    assert m.sparse.sampled_wgrad == 1.0 and m.sparse.initial_storage == "device"
    assert len(m.sparse.sampled_layers) == 5
    with pytest.raises(ValueError, match="sampled_wgrad"):
        SaRAMethod(sampled_wgrad=3)
    with pytest.raises(ValueError, match="initial_storage"):
        SaRAMethod(initial_storage="gpu")


def _layer_grads(conv, x, idx, dtype):
    """(sampled part, dense weight gradient gathered at idx, input and bias gradients of both)."""
    conv, x = conv.to(dtype), x.to(dtype)
    parts = []
    layer = SampledLayer(conv, idx, parts.append)
    g = torch.randn_like(conv(x), dtype=torch.float32).to(dtype)
    xs = x.clone().requires_grad_(True)
    gx_s, gb_s = torch.autograd.grad(layer.forward(xs), (xs, conv.bias), g)
    xd = x.clone().requires_grad_(True)
    gx_d, gw, gb_d = torch.autograd.grad(conv(xd), (xd, conv.weight, conv.bias), g)
    return parts[0], gw.flatten()[idx], (gx_s, gx_d), (gb_s, gb_d)


@pytest.mark.parametrize("kw", [dict(kernel_size=3, padding=1),
                                dict(kernel_size=3, stride=2, padding=1),
                                dict(kernel_size=3),
                                dict(kernel_size=(3, 2), stride=(2, 1), padding=(0, 1)),
                                dict(kernel_size=3, padding=2, dilation=2),
                                dict(kernel_size=1, stride=2)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kxk_conv_entries_equal_dense_gathered(kw, dtype):
    torch.manual_seed(0)
    conv = nn.Conv2d(6, 7, **kw)
    x = torch.randn(3, 6, 9, 11)
    n = conv.weight.numel()
    idx = torch.randperm(n)[: n // 4].sort().values
    part, ref, (gx_s, gx_d), (gb_s, gb_d) = _layer_grads(conv, x, idx, dtype)
    assert part.shape == idx.shape and part.dtype == dtype
    tol = 1e-6 if dtype == torch.float32 else 2e-2
    scale = float(ref.float().abs().max())
    assert float((part.float() - ref.float()).abs().max()) <= tol * scale, kw
    torch.testing.assert_close(gx_s.float(), gx_d.float(), rtol=tol, atol=tol * float(gx_d.float().abs().max()))
    torch.testing.assert_close(gb_s.float(), gb_d.float(), rtol=tol, atol=tol * float(gb_d.float().abs().max()))


def test_conv_entries_channels_last_and_shape_change():
    torch.manual_seed(0)
    conv = nn.Conv2d(5, 4, 3, padding=1)
    n = conv.weight.numel()
    idx = torch.randperm(n)[:30].sort().values
    for shape in [(2, 5, 8, 8), (1, 5, 6, 10)]:  # the cached start offsets follow the input shape
        x = torch.randn(*shape).to(memory_format=torch.channels_last)
        part, ref, _, _ = _layer_grads(conv, x, idx, torch.float32)
        torch.testing.assert_close(part, ref, rtol=1e-6, atol=1e-6 * float(ref.abs().max()))


def test_linear_entries_with_strided_input_and_output_gradient():
    # attention hands its projections transposed views: the [C, tokens] copies must see the
    # same tokens in the same order for x and g whatever their strides
    torch.manual_seed(0)
    lin = nn.Linear(12, 10)
    idx = torch.randperm(lin.weight.numel())[:40].sort().values
    x = torch.randn(3, 12, 7).transpose(1, 2)                    # [3, 7, 12], strided
    parts = []
    layer = SampledLayer(lin, idx, parts.append)
    g = torch.randn(3, 10, 7).transpose(1, 2)                    # [3, 7, 10], strided
    xs = x.clone().requires_grad_(True)
    gx_s, gb_s = torch.autograd.grad(layer.forward(xs), (xs, lin.bias), g)
    xd = x.clone().requires_grad_(True)
    gx_d, gw, gb_d = torch.autograd.grad(lin(xd), (xd, lin.weight, lin.bias), g)
    torch.testing.assert_close(parts[0], gw.flatten()[idx], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gx_s, gx_d, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(gb_s, gb_d, rtol=1e-6, atol=1e-6)
