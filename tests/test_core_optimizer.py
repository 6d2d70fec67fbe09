"""The SaRA optimizer: bit-exact freezing, reproducibility, equality with masked dense AdamW,
state size, Eq. 12, schedulers, progressive re-selection, official compat, exact resume."""
import copy
import io
import math
import warnings

import pytest
import torch
from torch import nn

import sara
from sara import SaRA, lr_from_threshold, select

try:
    from test_core_utils import (mlp, mlp_batch, mlp_loss, snapshot, tiny_unet, train,
                                 unet_batch, unet_loss)
except ImportError:
    from tests.test_core_utils import (mlp, mlp_batch, mlp_loss, snapshot, tiny_unet, train,
                                       unet_batch, unet_loss)

BATCHES = [mlp_batch(i) for i in range(4)]


def _run_mlp(steps=8, **kw):
    m = mlp()
    kw = {"threshold": 0.4, "lr": 1e-2, "lambda_rank": 0.0, "progressive_iter": None, **kw}
    opt = SaRA(m, **kw)
    train(m, opt, BATCHES, mlp_loss, steps)
    return m, opt


def test_unselected_bit_identical_selected_moved_rerun_identical():
    w0 = snapshot(mlp())
    m, opt = _run_mlp(steps=10, lambda_rank=1e-2, rank_min_side=2, progressive_iter=5)
    sel = select(mlp(), threshold=0.4)
    for n, p in m.named_parameters():
        mask = sel.mask(n)
        assert torch.equal(p.detach()[~mask], w0[n][~mask]), n  # frozen: bit-identical
        assert bool((p.detach()[mask] != w0[n][mask]).all()), n  # every selected entry moved
    m2, _ = _run_mlp(steps=10, lambda_rank=1e-2, rank_min_side=2, progressive_iter=5)
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), m2.parameters()))


def test_unet_unselected_bit_identical_and_reproducible():
    def run():
        m = tiny_unet()
        opt = SaRA(m, threshold=0.05, lr=1e-3, lambda_rank=1e-3, rank_min_side=4,
                   progressive_iter=2)
        train(m, opt, [unet_batch(0), unet_batch(1)], unet_loss, 3)
        return m, opt
    w0 = snapshot(tiny_unet())
    sel = select(tiny_unet(), threshold=0.05)
    m, opt = run()
    moved = 0
    for n, p in m.named_parameters():
        mask = sel.mask(n)
        assert torch.equal(p.detach()[~mask], w0[n][~mask]), n
        moved += int((p.detach()[mask] != w0[n][mask]).sum())
    assert moved == sel.count()
    m2, _ = run()
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), m2.parameters()))


def test_trajectory_equals_masked_dense_adamw():
    torch.manual_seed(0)
    lin = nn.Linear(6, 3)
    x, y = torch.randn(32, 6), torch.randn(32, 3)
    ref = copy.deepcopy(lin)
    theta = 0.25
    masks = {n: p.detach().abs() < theta for n, p in ref.named_parameters()}
    w0 = snapshot(ref)
    opt = SaRA(lin, threshold=theta, lr=1e-2, weight_decay=1e-2, lambda_rank=0,
               progressive_iter=None)
    ref_opt = torch.optim.AdamW(ref.parameters(), lr=1e-2, weight_decay=1e-2)
    for step in range(25):
        for model, o in ((lin, opt), (ref, ref_opt)):
            (model(x) - y).pow(2).mean().backward()
            if model is ref:
                for n, p in ref.named_parameters():
                    p.grad.mul_(masks[n])  # the gradient mask
            o.step()
            o.zero_grad()
        with torch.no_grad():  # masked AdamW never touches frozen entries (no decay either)
            for n, p in ref.named_parameters():
                p.copy_(torch.where(masks[n], p, w0[n]))
        for (n, p), q in zip(lin.named_parameters(), ref.parameters()):
            torch.testing.assert_close(p, q, rtol=0, atol=1e-6, msg=f"{n} step {step}")


def test_optimizer_state_is_2k_and_no_frozen_grad():
    m = mlp()
    opt = SaRA(m, threshold=0.3, lr=1e-2, lambda_rank=0, progressive_iter=None)
    k = opt.num_trainable
    assert k == select(mlp(), threshold=0.3).count()
    mlp_loss(m, BATCHES[0]).backward()
    assert all(p.grad is None for p in m.parameters())
    opt.step()
    tensors = [t for st in opt.state.values() for t in st.values() if torch.is_tensor(t)]
    per_entry = sum(t.numel() for t in tensors if t.dim() > 0)
    assert per_entry <= 2 * k
    assert all(t.numel() == 1 for t in tensors if t.dim() == 0)  # only the step counter
    assert [p for g in opt.param_groups for p in g["params"]] == [opt.sparse.values]


def test_default_lr_is_eq12():
    m = mlp()
    with pytest.warns(UserWarning, match="Eq. 12 at θ = 0.1"):  # outside the range Eq. 12 was fitted on
        opt = SaRA(m, threshold=2e-3 * 50)  # 0.1: a threshold the tiny model has entries below
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-3 * math.exp(-350 * 0.1))
    assert lr_from_threshold(2e-3) == pytest.approx(1e-3 * math.exp(-0.7))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside the fitted range: silent
        lr_from_threshold(1e-2)
    with pytest.warns(UserWarning, match=r"θ = 0.05 gives lr = 2.51e-11: it was fitted for θ ≤ 0.01"):
        assert lr_from_threshold(0.05) == pytest.approx(1e-3 * math.exp(-17.5))
    with pytest.raises(ValueError, match="threshold must be > 0"):
        lr_from_threshold(0)


def test_cosine_scheduler_drives_lr():
    m = mlp()
    opt = SaRA(m, threshold=0.4, lr=1e-2, lambda_rank=0, progressive_iter=3)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=6)
    lrs = []
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. "lr_scheduler.step() before optimizer.step()"
        for i in range(6):
            lrs.append(opt.param_groups[0]["lr"])
            mlp_loss(m, BATCHES[i % 4]).backward()
            opt.step()
            sched.step()
            opt.zero_grad()
    expected = [1e-2 * (1 + math.cos(math.pi * t / 6)) / 2 for t in range(6)]
    assert lrs == pytest.approx(expected)
    assert opt.reselected  # the scheduler kept working across the re-selection


def test_cosine_schedule_changes_updates():
    """the scheduled lr really reaches the update: a zero lr leaves the values alone"""
    m = mlp()
    opt = SaRA(m, threshold=0.4, lr=1e-2, lambda_rank=0, progressive_iter=None)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 0.0)
    before = opt.sparse.values.detach().clone()
    mlp_loss(m, BATCHES[0]).backward()
    opt.step()
    assert torch.equal(opt.sparse.values.detach(), before)
    del sched


def test_rules_smallest_largest_random():
    m = mlp()
    opt = SaRA(m, rule="smallest", k=50, lr=1e-2)
    assert opt.num_trainable == 50 and opt.progressive_iter == 2500
    assert opt.threshold == pytest.approx(select(mlp(), k=50).threshold)
    for rule in ("largest", "random"):
        o = SaRA(mlp(), rule=rule, k=40, lr=1e-2)
        assert o.num_trainable == 40 and o.progressive_iter is None  # no "below θ" to keep
    with pytest.raises(ValueError, match="k is a budget"):
        SaRA(mlp(), k=5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="threshold must be > 0"):
        SaRA(mlp(), threshold=0)
    with pytest.raises(ValueError, match="selects 0 of"):
        SaRA(mlp(), threshold=1e-12)
    with pytest.raises(ValueError, match="larger than the model"):
        SaRA(mlp(), rule="smallest", k=10**6)
    with pytest.raises(ValueError, match="compat"):
        SaRA(mlp(), threshold=0.1, lr=1e-3, compat="authors")
    with pytest.raises(ValueError, match="progressive_iter"):
        SaRA(mlp(), threshold=0.1, lr=1e-3, progressive_iter=0)
    m = mlp()
    SaRA(m, threshold=0.1, lr=1e-3)
    with pytest.raises(ValueError, match="already wrapped"):
        SaRA(m, threshold=0.1, lr=1e-3)


# ---------------------------------------------------------------------------- progressive


def test_progressive_keeps_moments_and_skips_no_update():
    P = 4
    a, oa = _run_mlp(steps=P, progressive_iter=P)   # re-selects after its 4th update
    b, ob = _run_mlp(steps=P, progressive_iter=None)
    assert oa.reselected and not ob.reselected
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters()))
    keep = ob.sparse.values.detach().abs() < 0.4
    assert 0 < int(keep.sum()) < keep.numel()
    assert oa.num_trainable == int(keep.sum())
    sa, sb = oa.state[oa.sparse.values], ob.state[ob.sparse.values]
    assert torch.equal(sa["exp_avg"], sb["exp_avg"][keep])
    assert torch.equal(sa["exp_avg_sq"], sb["exp_avg_sq"][keep])
    assert float(sa["step"]) == float(sb["step"]) == P
    # next step: kept entries move exactly like in the run without re-selection,
    # dropped entries stay at W_P
    wp = snapshot(a)
    for m, o in ((a, oa), (b, ob)):
        mlp_loss(m, BATCHES[P % 4]).backward()
        o.step()
        o.zero_grad()
    assert torch.equal(oa.sparse.values.detach(), ob.sparse.values.detach()[keep])
    for n, (idx, _, _) in oa.sparse.trained_entries().items():
        r = oa.sparse.retired.get(n)
        if r is not None:
            assert torch.equal(a.get_parameter(n).detach().reshape(-1)[r["indices"].long()],
                               wp[n].reshape(-1)[r["indices"].long()])


def test_progressive_none_disables():
    _, o = _run_mlp(steps=5, progressive_iter=None)
    assert not o.reselected


# ---------------------------------------------------------------------------- official


def test_official_abs_init_and_first_gradient_through_abs():
    m = mlp()
    ref = copy.deepcopy(m)
    opt = SaRA(m, threshold=0.4, lr=1e-2, lambda_rank=0, progressive_iter=None,
               compat="official")
    sp = opt.sparse
    sel = select(ref, threshold=0.4)
    with torch.no_grad():
        for n, p in ref.named_parameters():
            mask = sel.mask(n)
            p[mask] = p[mask].abs()
    assert all(torch.equal(p, q) for p, q in zip(m.parameters(), ref.parameters()))
    assert torch.equal(sp.values.detach(), sp.initial)  # the trained leaf keeps the signed W0
    mlp_loss(m, BATCHES[0]).backward()
    mlp_loss(ref, BATCHES[0]).backward()
    for n, p in ref.named_parameters():
        idx = sp.indices[n].long()
        expect = p.grad.reshape(-1)[idx] * torch.sgn(sp.initial[sp.slice(n)])
        torch.testing.assert_close(sp.values.grad[sp.slice(n)], expect, rtol=1e-5, atol=1e-7)
    assert sp.dense_masks is not None  # (d) whole-model boolean masks
    opt.step()
    for n in sp.names:  # after the first update the weights hold the signed values
        got = m.get_parameter(n).detach().reshape(-1)[sp.indices[n].long()]
        assert torch.equal(got, sp.values.detach()[sp.slice(n)])


def test_official_reselection_skips_update_and_resets_moments():
    P = 3
    m, o = _run_mlp(steps=P, progressive_iter=P, compat="official")
    assert not o.reselected
    values_p = o.sparse.values.detach().clone()
    w_p = snapshot(m)
    mlp_loss(m, BATCHES[P % 4]).backward()
    o.step()  # step P+1: re-selection only
    o.zero_grad()
    assert o.reselected and len(o.state[o.sparse.values]) == 0
    keep = values_p.abs() < 0.4
    assert torch.equal(o.sparse.values.detach(), values_p[keep])  # no update
    for n, p in m.named_parameters():  # weights: unchanged, except |.| on the kept entries
        idx = o.sparse.indices.get(n)
        expect = w_p[n].clone().reshape(-1)
        if idx is not None:
            expect[idx.long()] = expect[idx.long()].abs()
        assert torch.equal(p.detach().reshape(-1), expect), n
    mlp_loss(m, BATCHES[0]).backward()
    o.step()
    assert float(o.state[o.sparse.values]["step"]) == 1  # moments and step restarted


# ---------------------------------------------------------------------------- resume


@pytest.mark.parametrize("compat,storage,sampled", [
    ("ours", "auto", "auto"), ("official", "auto", "auto"), ("ours", "device", None),
    ("ours", "disk", 1.0), ("official", "host", 1.0)])
def test_state_dict_gives_exact_resume(compat, storage, sampled):
    """Exact resume wherever W0 is kept (device, host, temporary file) and with the weight
    gradients computed at the trained entries only or densely."""
    kw = dict(threshold=0.4, lr=1e-2, lambda_rank=5e-2, rank_min_side=2, progressive_iter=3,
              compat=compat, seed=7, initial_storage=storage, sampled_wgrad=sampled)
    full = mlp()
    of = SaRA(full, **kw)
    targets_full = []
    for i in range(7):
        mlp_loss(full, BATCHES[i % 4]).backward()
        of.step()
        of.zero_grad()
        targets_full.append(of.last_rank_targets)

    part = mlp()
    op = SaRA(part, **kw)
    for i in range(2):
        mlp_loss(part, BATCHES[i % 4]).backward()
        op.step()
        op.zero_grad()
    buf = io.BytesIO()
    torch.save(op.state_dict(), buf)
    buf.seek(0)

    fresh = mlp()  # a fresh copy of the base model
    orr = SaRA(fresh, **kw)
    orr.load_state_dict(torch.load(buf, weights_only=False))
    targets = []
    for i in range(2, 7):
        mlp_loss(fresh, BATCHES[i % 4]).backward()
        orr.step()
        orr.zero_grad()
        targets.append(orr.last_rank_targets)
    assert targets == targets_full[2:]
    assert orr.reselected and orr.iteration == of.iteration == 7
    assert all(torch.equal(p, q) for p, q in zip(full.parameters(), fresh.parameters()))
    assert torch.equal(orr.sparse.values, of.sparse.values)


def test_resume_after_reselection_onto_trained_model():
    kw = dict(threshold=0.4, lr=1e-2, lambda_rank=0, progressive_iter=2)
    full = mlp()
    of = SaRA(full, **kw)
    train(full, of, BATCHES, mlp_loss, 6)
    part = mlp()
    op = SaRA(part, **kw)
    train(part, op, BATCHES, mlp_loss, 4)
    sd = copy.deepcopy(op.state_dict())
    trained = copy.deepcopy(sara.merge(part))  # a full-model checkpoint of the same run
    o2 = SaRA(trained, **kw)  # selects on trained weights: load must restore the saved one
    o2.load_state_dict(sd)
    for i in range(4, 6):
        mlp_loss(trained, BATCHES[i % 4]).backward()
        o2.step()
        o2.zero_grad()
    assert all(torch.equal(p, q) for p, q in zip(full.parameters(), trained.parameters()))


def test_load_state_dict_refuses_other_base():
    _, o = _run_mlp(steps=2)
    other = mlp(seed=1)
    o2 = SaRA(other, threshold=0.4, lr=1e-2)
    before = snapshot(other)
    with pytest.raises(ValueError, match="another base model"):
        o2.load_state_dict(o.state_dict())
    assert all(torch.equal(p, before[n]) for n, p in other.named_parameters())


def test_save_params_paper_api(tmp_path):
    m, o = _run_mlp(steps=2)
    tensors = o.save_params()
    assert sum(v.numel() for k, v in tensors.items() if k.startswith("values/")) == o.num_trainable
    path = o.save_params(tmp_path / "sara.safetensors")
    assert path.exists()


def test_grad_scaler_matches_unscaled_run():
    plain, _ = _run_mlp(steps=4, lambda_rank=1e-2, rank_min_side=2, fused=True)
    m = mlp()
    opt = SaRA(m, threshold=0.4, lr=1e-2, lambda_rank=1e-2, rank_min_side=2,
               progressive_iter=None, fused=True)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    for i in range(4):
        scaler.scale(mlp_loss(m, BATCHES[i % 4])).backward()
        scaler.step(opt)
        scaler.update()
        opt.zero_grad()
    for p, q in zip(m.parameters(), plain.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-7)


def test_bad_rank_options_leave_model_untouched():
    m = mlp()
    with pytest.raises(ValueError, match="rank_targets"):
        SaRA(m, threshold=0.4, rank_targets="every")
    with pytest.raises(ValueError, match="lambda_rank"):
        SaRA(m, threshold=0.4, lambda_rank=-1)
    assert sara.get_sparse(m) is None and all(p.requires_grad for p in m.parameters())


def test_initial_storage_keeps_w0_off_the_training_memory(tmp_path):
    """W0 at the trained entries: on CPU by default in a temporary file (no resident bytes),
    identical wherever kept; deltas and re-selection read it; the file goes with the object."""
    import gc
    import os

    from sara.core.initial import resolve_storage

    assert resolve_storage("auto", torch.device("cpu")) == "disk"
    assert resolve_storage("auto", torch.device("cuda")) == "host"
    with pytest.raises(ValueError, match="initial_storage"):
        SaRA(mlp(), threshold=0.4, lr=1e-2, initial_storage="gpu")
    ref = SaRA(mlp(), threshold=0.4, lr=1e-2, initial_storage="device")
    m = mlp()
    opt = SaRA(m, threshold=0.4, lr=1e-2, progressive_iter=2)
    sp = opt.sparse
    assert sp.initial_storage == "disk" and sp.initial_device_bytes == 0
    assert ref.sparse.initial_device_bytes == 4 * ref.sparse.count()
    assert torch.equal(sp.initial, ref.sparse.initial)
    path = sp._initial._path
    assert os.path.exists(path)
    for i in range(3):  # through the re-selection at step 2
        mlp_loss(m, BATCHES[i]).backward()
        opt.step()
        opt.zero_grad()
    assert opt.reselected and sp.initial.shape == sp.values.shape
    d = sp.delta()
    w0 = snapshot(mlp())
    for n, t in d.items():
        torch.testing.assert_close(t, m.get_parameter(n).detach() - w0[n], rtol=0, atol=0)
    sp.restore_base()
    assert all(torch.equal(p, w0[n]) for n, p in m.named_parameters())
    del opt, sp
    gc.collect()
    assert not os.path.exists(path)
