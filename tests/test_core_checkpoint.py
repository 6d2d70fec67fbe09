"""Sparse-delta checkpoints: exact save -> load, α scaling (α=0 is the base exactly), β merging,
and refusal of checkpoints made for another model."""
import json

import pytest
import torch
from safetensors import safe_open
from torch import nn

import sara
from sara import SaRA, load_sparse, merge, merge_sparse, read_sparse, save_sparse

try:
    from test_core_utils import (MLP, mlp, mlp_batch, mlp_loss, pretrained, snapshot,
                                 tiny_unet, train, unet_batch, unet_loss, unet_out)
except ImportError:
    from tests.test_core_utils import (MLP, mlp, mlp_batch, mlp_loss, pretrained, snapshot,
                                       tiny_unet, train, unet_batch, unet_loss, unet_out)

BATCHES = [mlp_batch(i) for i in range(4)]


def _trained(steps=6, data_seed=0, **kw):
    m = mlp()
    kw = {"threshold": 0.4, "lr": 1e-2, "lambda_rank": 1e-2, "rank_min_side": 2,
          "progressive_iter": 3, **kw}
    opt = SaRA(m, **kw)
    train(m, opt, [mlp_batch(data_seed + i) for i in range(4)], mlp_loss, steps)
    return m, opt


def test_save_load_reproduces_outputs_exactly(tmp_path):
    m, opt = _trained()
    path = save_sparse(tmp_path / "d.safetensors", opt, metadata={"dataset": "toy"})
    fresh = mlp()
    meta = load_sparse(fresh, path)
    x = mlp_batch(9)[0]
    assert torch.equal(fresh(x), m(x))
    assert all(torch.equal(p, q) for p, q in zip(fresh.parameters(), m.parameters()))
    assert meta["dataset"] == "toy" and meta["rule"] == "threshold"
    assert json.loads(meta["threshold"]) == 0.4
    # only trained entries are stored (retired ones included), with their indices
    tensors, _ = read_sparse(path)
    stored = sum(v.numel() for k, v in tensors.items() if k.startswith("values/"))
    assert stored == opt.initial_count > opt.num_trainable
    assert int(meta["count"]) == stored and int(meta["active_count"]) == opt.num_trainable
    assert all(v.dtype == torch.int32 for k, v in tensors.items() if k.startswith("indices/"))


def test_alpha_zero_is_base_exactly_and_alpha_scales(tmp_path):
    m, opt = _trained()
    path = save_sparse(tmp_path / "d.safetensors", opt)
    base = mlp()
    x = mlp_batch(9)[0]
    zero = mlp()
    load_sparse(zero, path, alpha=0.0)
    assert torch.equal(zero(x), base(x))
    half = mlp()
    load_sparse(half, path, alpha=0.5)
    w0, w1 = snapshot(base), snapshot(m)
    for n, p in half.named_parameters():
        torch.testing.assert_close(p.detach(), w0[n] + 0.5 * (w1[n] - w0[n]), rtol=0, atol=1e-7)
    # loading again (α sweep on one model) is allowed: trained entries are rewritten
    load_sparse(half, path, alpha=1.0)
    assert torch.equal(half(x), m(x))


def test_merge_two_deltas(tmp_path):
    m1, o1 = _trained(data_seed=0)
    m2, o2 = _trained(data_seed=10, threshold=0.3)
    p1 = save_sparse(tmp_path / "a.safetensors", o1)
    p2 = save_sparse(tmp_path / "b.safetensors", o2)
    merged = merge_sparse(mlp(), [(p1, 0.7), (p2, 0.4)])
    w0, w1, w2 = snapshot(mlp()), snapshot(m1), snapshot(m2)
    for n, p in merged.named_parameters():
        expect = w0[n] + 0.7 * (w1[n] - w0[n]) + 0.4 * (w2[n] - w0[n])
        torch.testing.assert_close(p.detach(), expect, rtol=0, atol=1e-6)
    single = merge_sparse(mlp(), [(p1, 1.0)])
    assert all(torch.allclose(p, q, atol=1e-7) for p, q in zip(single.parameters(),
                                                               m1.parameters()))


def test_unet_save_load_exact(tmp_path):
    m = tiny_unet()
    opt = SaRA(m, threshold=0.05, lr=1e-3, lambda_rank=0, progressive_iter=None)
    train(m, opt, [unet_batch(0)], unet_loss, 2)
    path = save_sparse(tmp_path / "u.safetensors", m)  # from the wrapped model itself
    fresh = tiny_unet()
    load_sparse(fresh, path)
    with torch.no_grad():
        assert torch.equal(unet_out(fresh, unet_batch(3)), unet_out(m, unet_batch(3)))
        base = tiny_unet()
        zero = tiny_unet()
        load_sparse(zero, path, alpha=0)
        assert torch.equal(unet_out(zero, unet_batch(3)), unet_out(base, unet_batch(3)))


def test_official_checkpoint_stores_effective_weights(tmp_path):
    m, opt = _trained(compat="official", steps=4)  # step 4 re-selects: |.| write pending
    assert opt.sparse.abs_pending
    path = save_sparse(tmp_path / "o.safetensors", opt)
    fresh = mlp()
    load_sparse(fresh, path)
    x = mlp_batch(9)[0]
    assert torch.equal(fresh(x), m(x))
    assert read_sparse(path)[1]["compat"] == "official"


def test_after_merge_checkpoint_still_saves(tmp_path):
    m, opt = _trained()
    merge(m)
    path = save_sparse(tmp_path / "d.safetensors", opt.sparse)
    fresh = mlp()
    load_sparse(fresh, path)
    assert all(torch.equal(p, q) for p, q in zip(fresh.parameters(), m.parameters()))


# ---------------------------------------------------------------------------- refusals


class Wider(MLP):
    def __init__(self):
        super().__init__(hidden=20)


def test_refuses_other_architecture_naming_tensor_and_shapes(tmp_path):
    _, opt = _trained()
    path = save_sparse(tmp_path / "d.safetensors", opt)
    other = pretrained(Wider())
    before = snapshot(other)
    with pytest.raises(ValueError) as e:
        load_sparse(other, path)
    msg = str(e.value)
    assert "fc1.weight" in msg and "(16, 6)" in msg and "(20, 6)" in msg
    assert all(torch.equal(p, before[n]) for n, p in other.named_parameters())  # untouched


def test_refuses_same_shapes_other_base(tmp_path):
    _, opt = _trained()
    path = save_sparse(tmp_path / "d.safetensors", opt)
    with pytest.raises(ValueError, match="another base model.*fingerprint"):
        load_sparse(mlp(seed=1), path)
    with pytest.raises(ValueError, match="another base model"):
        merge_sparse(mlp(seed=1), [(path, 0.5)])
    load_sparse(mlp(seed=1), path, check_base=False)  # explicit opt-out


def test_refuses_missing_tensor_and_extra_tensor(tmp_path):
    _, opt = _trained()
    path = save_sparse(tmp_path / "d.safetensors", opt)
    smaller = nn.Sequential()
    smaller.add_module("x", nn.Linear(2, 2))
    with pytest.raises(ValueError, match="not in the model"):
        load_sparse(smaller, path)
    bigger = mlp()
    bigger.extra = nn.Linear(2, 2)
    with pytest.raises(ValueError, match="another base model.*'extra.weight'"):
        load_sparse(bigger, path)


def test_fp16_base_is_accepted_within_tolerance(tmp_path):
    _, opt = _trained()
    path = save_sparse(tmp_path / "d.safetensors", opt)
    half = mlp().half()
    load_sparse(half, path)  # the fp32-trained delta on an fp16 copy of the same base


def test_refuses_wrapped_model_and_non_checkpoint(tmp_path):
    m, opt = _trained()
    path = save_sparse(tmp_path / "d.safetensors", opt)
    with pytest.raises(ValueError, match="wrapped by sara"):
        load_sparse(m, path)
    from safetensors.torch import save_file
    save_file({"a": torch.zeros(2)}, str(tmp_path / "x.safetensors"))
    with pytest.raises(ValueError, match="not a sara sparse checkpoint"):
        load_sparse(mlp(), tmp_path / "x.safetensors")


def test_metadata_has_identity_and_budget(tmp_path):
    _, opt = _trained(rule="smallest", k=60, progressive_iter=None)
    path = save_sparse(tmp_path / "d.safetensors", opt)
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["rule"] == "smallest" and json.loads(meta["k"]) == 60 and meta["count"] == "60"
    assert meta["base_fingerprint"] == sara.model_fingerprint(mlp())[0]
    assert len(meta["base_fingerprint"]) == 64
