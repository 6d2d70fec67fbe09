"""Weight gradients computed only at the trained entries (SPEC §1.5 without the dense GEMM).

Unstructural backpropagation alone still lets autograd compute each touched layer's full weight
gradient (one GEMM of the layer's size) and then gathers the trained entries. For a layer whose
trained share is small this GEMM is most of the work. Here a linear or conv layer's forward runs
through :class:`SampledWeightGrad`: the same forward kernel, the input gradient from the same
backward kernel, and the weight gradient only at the trained ``(out, in[, ky, kx])`` entries:
``dW[o, i, ky, kx] = Σ_t G[o, t] · X_shift(ky, kx)[i, t]``, gathered in blocks of rows of the
transposed output gradient and of windows of the flat, channel-major input (a kernel offset is
a start offset there, so a kxk conv needs no shifted copies) and reduced by batched dot
products. The result is added straight into ``values.grad``; the weight tensor gets no gradient
at all.

Which layers take this path is a density crossover (trained entries / weight entries) measured
per device by ``benchmarks/memory_speed.py`` (``--crossover``): the dense GEMM runs at a far
higher rate than gathers, so only sparse enough layers win.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

#: Density below which a layer's weight gradient is computed at its trained entries only
#: ("auto"), per device type and layer kind: "linear" (linear and 1x1 conv) and "kxk" (larger
#: conv kernels). CPU, ``memory_speed.py``'s crossover on SD 1.5's layer shapes (256 px, batch 4,
#: one thread, process CPU seconds, forward + weight-gradient work summed over the layers; median
#: of 3 runs, benchmarks/results/sd15_cpu_crossover_conv.json): linear and 1x1 0.42-0.46 s sampled
#: against 0.67 s dense from 0.2% to 1% density, 0.53 s at 2%, 0.68 s at 5%; 3x3 convs 0.29 s at
#: 0.2%, 0.35 s at 1%, 0.41 s at 2%, 0.62 s at 5% against 0.70 s dense (5% is the largest density
#: measured; with shifted input copies and the bias gradient from convolution_backward they lost:
#: 0.73 s at 0.2%). CUDA: not measured, off.
CROSSOVER_DENSITY = {"cpu": {"linear": 0.02, "kxk": 0.05}, "cuda": {}}

#: Elements gathered per block (rows x tokens): 1 MiB per fp32 operand, small enough to stay in
#: the last-level cache (1 << 18 ran 20-25% faster than 1 << 16 on CPU: fewer Python iterations).
BLOCK_ELEMENTS = 1 << 18


def supports(module: nn.Module) -> bool:
    """Linear layers and zero-padded, ungrouped 2-D convolutions."""
    if type(module) is nn.Linear:
        return True
    return (type(module) is nn.Conv2d and module.groups == 1 and module.padding_mode == "zeros"
            and not isinstance(module.padding, str))


def kind(module: nn.Module | None) -> str:
    """The row of :data:`CROSSOVER_DENSITY` for a layer: "kxk" for a conv kernel larger than
    1x1, else "linear"."""
    big = isinstance(module, nn.Conv2d) and tuple(module.kernel_size) != (1, 1)
    return "kxk" if big else "linear"


def crossover_for(device: torch.device, setting, module: nn.Module | None = None) -> float:
    """The density threshold for ``setting`` ("auto", a float, or None/False = off); "auto"
    takes ``module``'s kind (a linear layer's when None)."""
    if setting is None or setting is False:
        return 0.0
    if setting == "auto":
        return float(CROSSOVER_DENSITY.get(torch.device(device).type, {}).get(kind(module), 0.0))
    value = float(setting)
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"sampled_wgrad must be 'auto', null or a density in [0, 1], got {setting!r}")
    return value


class SampledLayer:
    """One layer on the sampled path: its trained entries as out row, in column and (conv)
    kernel offset in input pixels, and where their gradients go (``accumulate(part)``, part in
    the entries' order)."""

    def __init__(self, module: nn.Module, indices: Tensor, accumulate: Callable[[Tensor], None]):
        self.module = module
        self.accumulate = accumulate
        w = module.weight
        idx = indices.to(w.device).long()
        self.count = int(idx.numel())
        per_row = w[0].numel()
        self.rows, rest = idx // per_row, idx % per_row
        if isinstance(module, nn.Linear):
            self.cols = rest
        else:
            kh, kw = w.shape[2:]
            self.cols, off = rest // (kh * kw), rest % (kh * kw)
            self.dy, self.dx = off // kw * module.dilation[0], off % kw * module.dilation[1]
        self._starts: tuple = (None, None)

    def starts(self, key: tuple, make: Callable[[], Tensor]) -> Tensor:
        """The entries' start offsets in the flat input for an input shape ``key`` (O(k)
        integer work, kept for the last shape seen)."""
        if self._starts[0] != key:
            self._starts = (key, make())
        return self._starts[1]

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
            gt, xt = _channel_major(g), _channel_major(x)          # [out | in, tokens]
            if need_b and ctx.has_bias:
                gb = gt.sum(1)
            starts = layer.starts(xt.shape, lambda: layer.cols * xt.shape[1])
            layer.accumulate(_dots(gt, xt.view(-1), layer.rows, starts))
        else:
            if need_x:  # input gradient only: asking the CPU (oneDNN) kernel for the bias
                # gradient as well makes it compute the whole weight gradient too
                gx = torch.ops.aten.convolution_backward(
                    g, x, w, None, m.stride, m.padding, m.dilation, False, [0, 0], m.groups,
                    [True, False, False])[0]
            if need_b and ctx.has_bias:
                gb = g.sum((0, 2, 3))
            layer.accumulate(_dots(*_conv_operands(x, g, m, layer)))
        if gx is not None:
            gx = gx.to(ctx.saved_tensors[0].dtype)
        return gx, None, gb, None


def _channel_major(t: Tensor) -> Tensor:
    """``t`` [..., C] as a contiguous [C, tokens] copy, in one copy whatever ``t``'s strides (a
    non-contiguous ``t``, e.g. from attention's head transposes, made ``reshape(-1, C).t()``
    copy twice, the first time as a slow transpose)."""
    return t.movedim(-1, 0).reshape(t.shape[-1], -1).contiguous()


def _conv_operands(x: Tensor, g: Tensor, m: nn.Conv2d, layer: SampledLayer):
    """``dW[o, i, ky, kx]`` as one dot product of flat rows: the input, zero-padded and split
    into stride phases, stored as ``[phase_y, phase_x, in, N, Hq, Wq]``; the output gradient
    on the same ``[N, Hq, Wq]`` grid (zeros outside ``Ho x Wo``). Kernel offset ``(dy, dx)``
    (input pixels) falls in phase ``(dy % sy, dx % sx)`` shifted by ``(dy // sy, dx // sx)``
    grid cells, so each entry's input row is a window of the flat input at a start offset:
    no per-offset copy, one gather per entry."""
    (ph, pw), (sy, sx) = m.padding, m.stride
    n, c, h, wd = x.shape
    ho, wo = g.shape[-2:]
    hq, wq = -(-(h + 2 * ph) // sy), -(-(wd + 2 * pw) // sx)
    pads = (pw, wq * sx - wd - pw, ph, hq * sy - h - ph)
    if (sy, sx) == (1, 1):  # one phase: pad the channel-major view in one copy, not two
        xs = x.transpose(0, 1)
        xs = (F.pad(xs, pads) if any(pads) else xs).contiguous()
    else:
        xp = F.pad(x, pads) if any(pads) else x
        xs = xp.reshape(n, c, hq, sy, wq, sx).permute(3, 5, 1, 0, 2, 4).contiguous()
    gp = g.new_zeros(g.shape[1], n, hq, wq)
    gp[:, :, :ho, :wo] = g.transpose(0, 1)
    length = (n - 1) * hq * wq + (ho - 1) * wq + wo          # up to the last output pixel

    def make():
        phase = (layer.dy % sy) * sx + layer.dx % sx
        return (phase * c + layer.cols) * n * hq * wq + layer.dy // sy * wq + layer.dx // sx

    starts = layer.starts((n, c, h, wd), make)
    return gp.view(gp.shape[0], -1)[:, :length], xs.view(-1), layer.rows, starts


def _dots(gt: Tensor, xflat: Tensor, rows: Tensor, starts: Tensor) -> Tensor:
    """``part[e] = gt[rows[e]] · xflat[starts[e]:starts[e] + L]`` (``L = gt.shape[1]``) for
    every entry, in blocks of rows gathered from both."""
    length = gt.shape[1]
    windows = xflat.unfold(0, length, 1)                     # a view: row s = xflat[s:s+L]
    block = max(1, BLOCK_ELEMENTS // max(1, length))
    out = torch.empty(rows.numel(), dtype=gt.dtype, device=gt.device)
    for s in range(0, rows.numel(), block):
        a = gt.index_select(0, rows[s:s + block])
        b = windows.index_select(0, starts[s:s + block])
        torch.sum(a.mul_(b), dim=1, out=out[s:s + block])
    return out
