"""Weight gradients computed only at the trained entries (SPEC §1.5 without the dense GEMM).

Unstructural backpropagation alone still lets autograd compute each touched layer's full weight
gradient (one GEMM of the layer's size) and then gathers the trained entries. For a layer whose
trained share is small this GEMM is most of the work. Here a linear or conv layer's forward runs
through :class:`SampledWeightGrad`: the same forward kernel, the input gradient from the same
backward kernel, and the weight gradient only at the trained ``(out, in[, ky, kx])`` entries:
``dW[o, i, ky, kx] = Σ_t G[o, t] · X_shift(ky, kx)[i, t]``, gathered in blocks of rows of the
transposed output gradient and (shifted) input and reduced by batched dot products. The result
is added straight into ``values.grad``; the weight tensor gets no gradient at all.

Which layers take this path is a density crossover (trained entries / weight entries) measured
per device by ``benchmarks/memory_speed.py`` (``--crossover``): the dense GEMM runs at a far
higher rate than gathers, so only sparse enough layers win.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Density below which a linear or 1x1-conv layer's weight gradient is computed at its trained
#: entries only, per device type ("auto"). CPU: ``memory_speed.py --crossover`` on SD 1.5's layer
#: shapes (256 px, batch 4, one thread; benchmarks/results/sd15_cpu_crossover.json): the linear
#: and 1x1 layers' weight-gradient work is 0.46-0.49 s sampled against 0.69 s dense from 0.2% to
#: 1% density, 0.65 s at 2%, 0.99 s at 5%. 3x3 convs lose at every density (0.81 s at 0.2%
#: against 0.73 s dense), so "auto" leaves them dense. CUDA: not measured yet, off.
CROSSOVER_DENSITY = {"cpu": 0.02, "cuda": 0.0}

#: Elements gathered per block (rows x tokens): small enough to stay in cache.
BLOCK_ELEMENTS = 1 << 16


def supports(module: nn.Module, auto: bool = False) -> bool:
    """Linear layers and zero-padded, ungrouped 2-D convolutions; with ``auto`` only those
    where the sampled path can win (linear and 1x1 conv: a kxk conv needs one shifted copy of
    its input per kernel offset)."""
    if type(module) is nn.Linear:
        return True
    ok = (type(module) is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros"
          and not isinstance(module.padding, str))
    return ok and (not auto or tuple(module.kernel_size) == (1, 1))


def crossover_for(device: torch.device, setting) -> float:
    """The density threshold for ``setting`` ("auto", a float, or None/False = off)."""
    if setting is None or setting is False:
        return 0.0
    if setting == "auto":
        return float(CROSSOVER_DENSITY.get(torch.device(device).type, 0.0))
    value = float(setting)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"sampled_wgrad must be 'auto', null or a density in [0, 1], got {setting!r}")
    return value


class SampledLayer:
    """One layer on the sampled path: its trained entries as (out row, in column) per kernel
    offset, and where their gradients go (``accumulate(part)``, part in the entries' order)."""

    def __init__(self, module: nn.Module, indices: Tensor, accumulate: Callable[[Tensor], None]):
        self.module = module
        self.accumulate = accumulate
        w = module.weight
        idx = indices.to(w.device).long()
        self.count = int(idx.numel())
        if isinstance(module, nn.Linear):
            cols = w.shape[1]
            self.groups = [((0, 0), idx // cols, idx % cols, None)]
        else:
            out_c, in_c, kh, kw = w.shape
            o, rest = idx // (in_c * kh * kw), idx % (in_c * kh * kw)
            i, off = rest // (kh * kw), rest % (kh * kw)
            self.groups = []
            for k in torch.unique(off).tolist():
                pos = torch.nonzero(off == k).squeeze(1)
                self.groups.append(((k // kw, k % kw), o[pos], i[pos], pos))

    def forward(self, input: Tensor) -> Tensor:  # noqa: A002 - nn.Linear's name (diffusers calls proj_in(input=...))
        m = self.module
        return SampledWeightGrad.apply(input, m.weight, m.bias, self)


class SampledWeightGrad(torch.autograd.Function):
    """``module(x)`` whose backward returns the input and bias gradients and adds the weight
    gradient at the trained entries to the values (no gradient for the weight tensor)."""

    @staticmethod
    def forward(ctx, x, weight, bias, layer: SampledLayer):
        m = layer.module
        ctx.layer = layer
        ctx.has_bias = bias is not None
        dev = x.device.type
        ctx.cast = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else None
        ctx.save_for_backward(x, weight)
        if isinstance(m, nn.Linear):
            return F.linear(x, weight, bias)
        return m._conv_forward(x, weight, bias)

    @staticmethod
    def backward(ctx, g):
        x, w = ctx.saved_tensors
        layer = ctx.layer
        m = layer.module
        if ctx.cast is not None:
            x, w = x.to(ctx.cast), w.to(ctx.cast)
        g = g.to(x.dtype)
        need_x, _, need_b = ctx.needs_input_grad[:3]
        gx = gb = None
        if isinstance(m, nn.Linear):
            if need_x:
                gx = g.matmul(w)
            if need_b and ctx.has_bias:
                gb = g.reshape(-1, g.shape[-1]).sum(0)
            gt = g.reshape(-1, g.shape[-1]).t().contiguous()       # [out, tokens]
            xt = x.reshape(-1, x.shape[-1]).t().contiguous()       # [in, tokens]
            layer.accumulate(_dots(gt, {(0, 0): xt}, layer))
        else:
            if need_x or (need_b and ctx.has_bias):
                gx, _, gb = torch.ops.aten.convolution_backward(
                    g, x, w, [w.shape[0]] if ctx.has_bias else None, m.stride, m.padding,
                    m.dilation, False, [0, 0], m.groups, [need_x, False, need_b and ctx.has_bias])
            gt = g.transpose(0, 1).reshape(g.shape[1], -1)          # [out, N*Ho*Wo]
            layer.accumulate(_dots(gt, _conv_slabs(x, g.shape[-2:], m, layer), layer))
        if gx is not None:
            gx = gx.to(ctx.saved_tensors[0].dtype)
        return gx, None, gb, None


def _conv_slabs(x: Tensor, out_hw, m: nn.Conv2d, layer: SampledLayer) -> dict:
    """Per kernel offset with trained entries: the input pixels each output pixel sees there,
    as ``[in, N*Ho*Wo]``."""
    (ph, pw), (sh, sw), (dh, dw) = m.padding, m.stride, m.dilation
    ho, wo = out_hw
    xp = F.pad(x, (pw, pw, ph, ph)) if (ph or pw) else x
    out = {}
    for (ky, kx), _, _, _ in layer.groups:
        y0, x0 = ky * dh, kx * dw
        s = xp[:, :, y0:y0 + sh * (ho - 1) + 1:sh, x0:x0 + sw * (wo - 1) + 1:sw]
        out[(ky, kx)] = s.transpose(0, 1).reshape(x.shape[1], -1)
    return out


def _dots(gt: Tensor, slabs: dict, layer: SampledLayer) -> Tensor:
    """``part[e] = gt[row_e] · slab[col_e]`` for every trained entry, in blocks."""
    tokens = gt.shape[1]
    block = max(1, BLOCK_ELEMENTS // max(1, tokens))
    out = torch.empty(layer.count, dtype=gt.dtype, device=gt.device)
    for key, rows, cols, pos in layer.groups:
        xt = slabs[key]
        res = torch.empty(rows.numel(), dtype=gt.dtype, device=gt.device)
        for s in range(0, rows.numel(), block):
            a = gt.index_select(0, rows[s:s + block])
            b = xt.index_select(0, cols[s:s + block])
            torch.sum(a.mul_(b), dim=1, out=res[s:s + block])
        if pos is None:
            out = res
        else:
            out[pos] = res
    return out
