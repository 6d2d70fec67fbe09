"""sara.core on a CUDA device (skipped without one): int32 index kernels, fused AdamW, memory
of the unstructural backward (no dense gradient buffer persists; one exists at a time)."""
import copy

import pytest
import torch
from torch import nn

from sara import SaRA, load_sparse, save_sparse, select, wrap

try:
    from test_core_utils import (conv_batch, conv_loss, convnet, snapshot, tiny_unet,
                                 unet_batch, unet_loss, unet_out)
except ImportError:
    from tests.test_core_utils import (conv_batch, conv_loss, convnet, snapshot, tiny_unet,
                                       unet_batch, unet_loss, unet_out)

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
DEV = "cuda"


def _to(batch):
    return tuple(t.to(DEV) for t in batch)


def test_cuda_grad_equality_and_frozen_bits():
    m = convnet().to(DEV)
    ref = copy.deepcopy(m)
    sel = select(m, threshold=0.4)
    assert all(i.device.type == "cuda" for i in sel.indices.values())
    sp = wrap(m, sel)
    conv_loss(m, _to(conv_batch())).backward()
    conv_loss(ref, _to(conv_batch())).backward()
    for n, p in ref.named_parameters():
        torch.testing.assert_close(sp.values.grad[sp.slice(n)],
                                   p.grad.reshape(-1)[sel.indices[n].long()], rtol=1e-4,
                                   atol=1e-6)
    assert all(p.grad is None for p in m.parameters())


def test_cuda_conv_train_save_load_exact(tmp_path):
    w0 = snapshot(convnet().to(DEV))
    m = convnet().to(DEV)
    opt = SaRA(m, threshold=0.4, lr=1e-3, lambda_rank=1e-3, rank_min_side=2,
               progressive_iter=2)
    b = _to(conv_batch())
    for _ in range(3):
        conv_loss(m, b).backward()
        opt.step()
        opt.zero_grad()
    sel = select(convnet().to(DEV), threshold=0.4)
    for n, p in m.named_parameters():
        mask = sel.mask(n)
        assert torch.equal(p.detach()[~mask], w0[n][~mask])
        assert bool((p.detach()[mask] != w0[n][mask]).all())
    path = save_sparse(tmp_path / "c.safetensors", opt)
    fresh = convnet().to(DEV)
    load_sparse(fresh, path)
    with torch.no_grad():
        assert torch.equal(fresh(b[0]), m(b[0]))
        zero = convnet().to(DEV)
        load_sparse(zero, path, alpha=0)
        assert torch.equal(zero(b[0]), convnet().to(DEV)(b[0]))


def test_cuda_unet_train_save_load_exact(tmp_path):
    w0 = snapshot(tiny_unet().to(DEV))
    m = tiny_unet().to(DEV)
    opt = SaRA(m, threshold=0.05, lr=1e-3, lambda_rank=1e-3, rank_min_side=4,
               progressive_iter=2)
    assert opt.defaults["fused"]  # fused AdamW kernel on CUDA
    b = _to(unet_batch())
    for _ in range(3):
        unet_loss(m, b).backward()
        opt.step()
        opt.zero_grad()
    sel = select(tiny_unet().to(DEV), threshold=0.05)
    for n, p in m.named_parameters():
        mask = sel.mask(n)
        assert torch.equal(p.detach()[~mask], w0[n][~mask])
    path = save_sparse(tmp_path / "u.safetensors", opt)
    fresh = tiny_unet().to(DEV)
    load_sparse(fresh, path)
    with torch.no_grad():
        assert torch.equal(unet_out(fresh, b), unet_out(m, b))


def test_cuda_fused_trajectory_matches_masked_adamw():
    torch.manual_seed(0)
    lin = nn.Linear(64, 32).to(DEV)
    x, y = torch.randn(128, 64, device=DEV), torch.randn(128, 32, device=DEV)
    ref = copy.deepcopy(lin)
    masks = {n: p.detach().abs() < 0.05 for n, p in ref.named_parameters()}
    w0 = snapshot(ref)
    opt = SaRA(lin, threshold=0.05, lr=1e-2, lambda_rank=0, progressive_iter=None)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=1e-2)
    for _ in range(20):
        for model, o in ((lin, opt), (ref, ref_opt)):
            (model(x) - y).pow(2).mean().backward()
            if model is ref:
                for n, p in ref.named_parameters():
                    p.grad.mul_(masks[n])
            o.step()
            o.zero_grad()
        with torch.no_grad():
            for n, p in ref.named_parameters():
                p.copy_(torch.where(masks[n], p, w0[n]))
    for p, q in zip(lin.parameters(), ref.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-6)


def test_cuda_backward_memory_is_one_tensor_at_a_time():
    torch.manual_seed(0)
    width, depth = 2048, 8
    model = nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(depth)]).to(DEV)
    tensor_bytes = width * width * 4
    opt = SaRA(model, rule="smallest", k=width * width * depth // 100, lr=1e-3,
               lambda_rank=0, progressive_iter=None)
    x = torch.randn(4, width, device=DEV)
    model(x).pow(2).mean().backward()  # warm-up: values.grad and AdamW state exist
    opt.step()
    opt.zero_grad()
    torch.cuda.synchronize()
    loss = model(x).pow(2).mean()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    loss.backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - base
    after = torch.cuda.memory_allocated() - base
    print(f"backward: peak {peak / tensor_bytes:.2f}, kept {after / tensor_bytes:.3f} tensors")
    assert all(p.grad is None for p in model.parameters())
    assert after < tensor_bytes // 4  # only values.grad (1% of one model) persists
    assert peak < 2.5 * tensor_bytes  # never more than ~one dense gradient at a time
    assert peak < depth * tensor_bytes / 3  # far below dense masked gradients (LT-SFT)
