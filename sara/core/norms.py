"""Normalisation layers train their affine pair together or not at all.

PyTorch's CUDA layer-norm backward sizes the bias-gradient scratch buffer from the weight
gradient on its large-row path (more than 65,536 rows, e.g. SD 2.0 at 768 px, batch 8): when only
the bias of a ``LayerNorm`` requires grad, it returns a bias gradient of shape ``[0]`` and autograd
stops with "NativeLayerNormBackward0 returned an invalid gradient at index 2". SaRA's threshold
selection makes exactly that case common (biases start near 0, norm scales at 1). The kernels are
only exercised with both or neither affine gradient here: a frozen partner of a trained weight or
bias is given ``requires_grad`` and its gradient is dropped as soon as it is complete (its entries
never change; it costs one vector of the layer's width).
"""
from __future__ import annotations

from torch import nn

NORM_TYPES = (nn.LayerNorm, nn.GroupNorm, nn.modules.batchnorm._NormBase)


def is_norm(module: nn.Module) -> bool:
    """torch's layer/group/batch/instance norms, and any module named like one (diffusers'
    ``AdaGroupNorm``, ``RMSNorm``...)."""
    return isinstance(module, NORM_TYPES) or "norm" in type(module).__name__.lower()


def affine_partners(model: nn.Module, trained: set[str]) -> dict[str, nn.Parameter]:
    """The frozen ``weight`` or ``bias`` of every normalisation layer whose other affine tensor
    is in ``trained`` (parameter names): these must require grad too."""
    out = {}
    for prefix, mod in model.named_modules():
        if not is_norm(mod):
            continue
        pair = {k: p for k, p in mod.named_parameters(recurse=False) if k in ("weight", "bias")}
        if len(pair) != 2:
            continue
        names = {k: f"{prefix}.{k}" if prefix else k for k in pair}
        if any(names[k] in trained for k in pair):
            for k, p in pair.items():
                if names[k] not in trained:
                    out[names[k]] = p
    return out


def drop_grad(p: nn.Parameter) -> None:
    """Post-accumulate-grad hook of a partner: its gradient is not used."""
    p.grad = None
