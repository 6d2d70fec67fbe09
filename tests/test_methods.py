"""A flat test matrix over every compared method (every ``conf/method/*.yaml``) on a micro
``UNet2DConditionModel`` (the classes SD uses, ~200k parameters): a few steps on a fixed batch
lower the loss; only the method's own parameters change; save -> load onto a fresh copy gives
identical outputs; merged weights give the unmerged outputs (1e-5) where the method merges.
"""
from __future__ import annotations

import copy
import itertools

import pytest
import torch
from torch import nn

from sara.budget import instantiate_method, method_names
from sara.methods.base import PrepareContext

# textual_inversion trains a text-encoder row of a whole backbone (tests/test_customisation.py)
METHODS = [m for m in method_names() if m != "textual_inversion"]
MERGES = {"full", "lora", "dora", "sara", "sara_no_ppa", "sara_no_rank", "sara_plain", "largest",
          "random", "lt_sft", "lt_sft_dense", "diffpruning", "fishmask"}
#: knobs that keep the calibration phases and the rank loss small enough for a 2-core CPU
FAST = {
    "sara": {"rank_min_side": 4}, "sara_no_ppa": {"rank_min_side": 4},
    "sara_no_rank": {"rank_min_side": 4}, "sara_plain": {},
    "lt_sft": {"phase1_steps": 2}, "lt_sft_dense": {"phase1_steps": 2},
    "diffpruning": {"gate_steps": 2, "l0_lambda": 1e-4}, "fishmask": {"n_samples": 3},
}
STEPS = 6
BUDGET = 4000  # ~2% of the micro UNet


def micro_unet(seed: int = 0) -> nn.Module:
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(16, 32),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"), cross_attention_dim=16,
        attention_head_dim=4, norm_num_groups=8)


def fixed_batch(seed: int = 0, n: int = 2) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"x0": torch.randn(n, 4, 8, 8, generator=g), "noise": torch.randn(n, 4, 8, 8, generator=g),
            "t": torch.randint(0, 1000, (n,), generator=g), "ehs": torch.randn(n, 5, 16, generator=g)}


def loss_fn(model: nn.Module, b: dict) -> torch.Tensor:
    """A simple epsilon-prediction denoising loss at fixed noise levels."""
    a = torch.cos(b["t"].float() / 1000 * torch.pi / 2).view(-1, 1, 1, 1)
    x = a * b["x0"] + (1 - a * a).sqrt() * b["noise"]
    return torch.nn.functional.mse_loss(model(x, b["t"], b["ehs"]).sample, b["noise"])


@torch.no_grad()
def outputs(model: nn.Module, b: dict) -> torch.Tensor:
    model.eval()
    a = torch.cos(b["t"].float() / 1000 * torch.pi / 2).view(-1, 1, 1, 1)
    x = a * b["x0"] + (1 - a * a).sqrt() * b["noise"]
    return model(x, b["t"], b["ehs"]).sample


def make(name: str):
    return instantiate_method(name, **FAST.get(name, {}))


def ctx(b: dict) -> PrepareContext:
    return PrepareContext(loss_fn=loss_fn, batches=itertools.repeat(b), steps=STEPS, seed=0)


@pytest.fixture(scope="module")
def base() -> nn.Module:
    return micro_unet()


@pytest.fixture(scope="module")
def batch() -> dict:
    return fixed_batch()


def train(name: str, base: nn.Module, batch: dict, steps: int = STEPS):
    """(method, module, losses, original (param object, name, W0) triples)."""
    den = copy.deepcopy(base)
    orig = [(p, n, p.detach().clone()) for n, p in den.named_parameters()]
    m = make(name)
    budget = None if name == "full" else BUDGET
    mod = m.apply(den, budget=budget, ctx=ctx(batch))
    opt = m.make_optimizer(lr=3e-3)
    losses = []
    mod.train()
    for _ in range(steps):
        loss = loss_fn(mod, batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(float(loss.detach()))
    return m, mod, losses, orig


@pytest.fixture(scope="module")
def trained(base, batch):
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = train(name, base, batch)
        return cache[name]
    return get


def test_every_method_has_a_config():
    for want in ("sara", "sara_no_ppa", "sara_no_rank", "sara_plain", "largest", "random", "lora",
                 "dora", "adaptformer", "lt_sft", "diffpruning", "fishmask", "full"):
        assert want in METHODS
    for name in METHODS:
        m = instantiate_method(name)
        assert m.name == name


@pytest.mark.parametrize("name", METHODS)
def test_loss_decreases(name, trained):
    m, _, losses, _ = trained(name)
    assert losses[-1] < losses[0], losses
    assert all(torch.isfinite(torch.tensor(losses)))


@pytest.mark.parametrize("name", METHODS)
def test_only_own_parameters_change(name, trained, base, batch):
    m, mod, _, orig = trained(name)
    if name == "full":
        assert any(not torch.equal(p.detach(), w0) for p, _, w0 in orig)
        return
    selective = hasattr(m, "sparse") or hasattr(m, "_dense_idx")
    if selective:
        entries = {n: v[0] for n, v in (m.sparse.trained_entries().items() if m.sparse is not None
                                        else ((n, (i,)) for n, i in m._dense_idx.items()))}
    changed_total = 0
    for p, n, w0 in orig:
        diff = (p.detach() != w0).reshape(-1)
        if not selective:
            assert not diff.any(), f"{name}: frozen weight {n} changed"
            continue
        where = torch.nonzero(diff).squeeze(1)
        allowed = entries.get(n, torch.zeros(0, dtype=torch.long)).long()
        assert bool(torch.isin(where, allowed).all()), f"{name}: {n} changed outside the selection"
        changed_total += where.numel()
        assert p.grad is None, f"{name}: frozen tensor {n} kept a .grad"
    if selective:
        assert changed_total > 0
        assert sum(int(i.numel()) for i in entries.values()) == BUDGET  # k exact / θ hits it here
    own = m.trainable_parameters()
    assert own
    if name != "lt_sft_dense":  # the dense-masking baseline trains the original tensors
        assert all(not any(q is p for p, _, _ in orig) for q in own)


@pytest.mark.parametrize("name", METHODS)
def test_trainable_count_matches_solved_knob(name, base):
    if name == "full":
        pytest.skip("no knob")
    m = make(name)
    knob, achieved = m.solve_budget(base, BUDGET)
    if name in ("lt_sft", "lt_sft_dense", "diffpruning", "fishmask"):
        assert knob == achieved == BUDGET  # apply's calibration is exercised by the other tests
        return
    mod = m.apply(copy.deepcopy(base), budget=BUDGET, ctx=PrepareContext(steps=STEPS))
    assert m.knob_value == knob
    assert m.num_trainable() == achieved
    rec = m.record()
    assert rec["target_params"] == BUDGET and rec["trainable_params"] == achieved
    del mod


@pytest.mark.parametrize("name", METHODS)
def test_save_load_identical_outputs(name, trained, base, batch, tmp_path):
    m, mod, _, _ = trained(name)
    want = outputs(mod, batch)
    state = {k: v.detach().clone() for k, v in m.trained_state_dict().items()}
    # (a) restore onto a fresh copy of the base model (no calibration phase)
    m2 = make(name)
    mod2 = m2.restore(copy.deepcopy(base), state, budget=None if name == "full" else BUDGET)
    assert torch.equal(outputs(mod2, batch), want)
    # (b) file round trip: save_trained -> apply on a fresh copy -> load_trained
    path = tmp_path / f"{name}.safetensors"
    m.save_trained(path)
    m3 = make(name)
    mod3 = m3.apply(copy.deepcopy(base), budget=None if name == "full" else BUDGET, ctx=ctx(batch))
    m3.load_trained(path)
    assert torch.equal(outputs(mod3, batch), want)


@pytest.mark.parametrize("name", METHODS)
def test_merged_equals_unmerged(name, base, batch):
    m, mod, _, _ = train(name, base, batch, steps=2)
    want = outputs(mod, batch)
    plain = m.merged(mod)
    got = outputs(plain, batch)
    if name in MERGES:
        assert torch.allclose(got, want, atol=1e-5, rtol=0), (got - want).abs().max()
        from peft.tuners.tuners_utils import BaseTunerLayer
        from sara.core import get_sparse

        assert get_sparse(plain) is None
        assert not any(isinstance(x, BaseTunerLayer) for x in plain.modules())
        assert type(plain) is type(base)
        assert set(dict(plain.named_parameters())) == set(dict(base.named_parameters()))
    else:  # adaptformer: cannot merge, returns the module unchanged
        assert plain is mod and torch.equal(got, want)


def test_sara_progressive_and_rank_loss(base, batch):
    """sara: re-selection at progressive_iter = 0.5 * steps shrinks the selection; the rank loss
    is active (eligible matrices at rank_min_side=4); lr null -> Eq. 12."""
    from sara.core import lr_from_threshold

    m, _, _, _ = train("sara", base, batch)
    opt = m.optimizer
    assert opt.progressive_iter == STEPS // 2 and opt.reselected
    assert m.num_active() < opt.initial_count == BUDGET == m.num_trainable()
    assert m.record()["active_trainable_params"] == m.num_active()
    assert opt.last_rank_loss is not None and opt.last_rank_loss > 0
    m2 = make("sara")
    m2.apply(copy.deepcopy(base), budget=BUDGET, ctx=PrepareContext(steps=STEPS))
    assert m2.make_optimizer(lr=None).param_groups[0]["lr"] == pytest.approx(lr_from_threshold(m2.knob_value))
    m3 = instantiate_method("sara_plain")
    m3.apply(copy.deepcopy(base), budget=BUDGET, ctx=PrepareContext(steps=STEPS))
    assert m3.optimizer.progressive_iter is None and m3.optimizer.lambda_rank == 0


def test_sara_fractional_progressive_without_steps(base, caplog):
    """A fractional progressive_iter with zero training steps (a scaling/merging run) disables
    re-selection quietly; without any trainer context it warns."""
    import logging

    with caplog.at_level(logging.WARNING, logger="sara"):
        m = make("sara")
        m.apply(copy.deepcopy(base), budget=BUDGET, ctx=PrepareContext(steps=0))
        assert m.optimizer.progressive_iter is None
        assert not [r for r in caplog.records if "progressive_iter" in r.getMessage()]
        m2 = make("sara")
        m2.apply(copy.deepcopy(base), budget=BUDGET)
        assert m2.optimizer.progressive_iter is None
        assert [r for r in caplog.records if "step count is unknown" in r.getMessage()]


def test_sara_budget_mode_k_and_fair_ablation_counts(base):
    m = instantiate_method("sara", budget_mode="k")
    m.apply(copy.deepcopy(base), budget=1234, ctx=PrepareContext(steps=10))
    assert m.knob == "k" and m.num_trainable() == 1234
    # largest / random with no budget train as many entries as θ selects
    theta = 5e-3
    n_theta = sum(int((p.abs() < theta).sum()) for p in base.parameters())
    for rule in ("largest", "random"):
        r = instantiate_method(rule, threshold=theta)
        r.apply(copy.deepcopy(base), budget=None, ctx=PrepareContext(steps=10))
        assert r.num_trainable() == n_theta
        assert r.optimizer.progressive_iter is None


def test_lt_sft_dense_masking_equals_unstructural(base, batch):
    """Classical dense-gradient masking and SaRA's sparse backprop train the same values; the dense
    variant keeps full-size gradients (what the memory benchmark measures), the sparse one none."""
    a, mod_a, la, _ = train("lt_sft", base, batch, steps=3)
    b, mod_b, lb, _ = train("lt_sft_dense", base, batch, steps=3)
    assert la == pytest.approx(lb, rel=1e-5)
    sa, sb = a.trained_state_dict(), b.trained_state_dict()
    for k in sb:
        assert torch.equal(sa[k].long() if k.startswith("indices/") else sa[k], sb[k].long()
                           if k.startswith("indices/") else sb[k]) or torch.allclose(sa[k], sb[k], atol=1e-6)
    loss_fn(mod_b, batch).backward()
    dense_grads = [p for p in mod_b.parameters() if p.grad is not None]
    assert dense_grads and all(p.grad.shape == p.shape for p in dense_grads)
    loss_fn(mod_a, batch).backward()
    assert all(p.grad is None for p in mod_a.parameters())


def test_calibration_methods_need_a_context(base):
    for name in ("lt_sft", "diffpruning", "fishmask"):
        with pytest.raises(ValueError, match="PrepareContext"):
            make(name).apply(copy.deepcopy(base), budget=100, ctx=None)


@pytest.mark.parametrize("name,desc", [("lt_sft", "lt_sft phase 1"), ("diffpruning", "diffpruning gates")])
def test_calibration_phase_shows_progress_when_the_trainer_does(name, desc, base, batch, capsys):
    """A calibration phase inside apply() is as long as the training: silent, a run looks stuck."""
    for progress in (False, True):
        c = PrepareContext(loss_fn=loss_fn, batches=itertools.repeat(batch), steps=STEPS, seed=0,
                           extra={"progress": progress})
        make(name).apply(copy.deepcopy(base), budget=BUDGET, ctx=c)
        err = capsys.readouterr().err
        assert (desc in err) == progress, err


def test_fishmask_splits_batches_into_single_samples(base, batch):
    from sara.methods._util import split_batch

    parts = split_batch({"pixel_values": torch.zeros(3, 2), "prompts": ["a", "b", "c"], "k": 1})
    assert len(parts) == 3 and parts[1]["prompts"] == ["b"] and parts[1]["pixel_values"].shape == (1, 2)
    m = instantiate_method("fishmask", n_samples=3)
    seen = []

    def counting_loss(model, b):
        seen.append(b["x0"].shape[0])
        return loss_fn(model, b)
    m.apply(copy.deepcopy(base), budget=100,
            ctx=PrepareContext(loss_fn=counting_loss, batches=itertools.repeat(batch), steps=1))
    assert seen == [1, 1, 1]
    assert m.record()["fisher"]["n_samples"] == 3


def test_lora_targets_and_joint_attention():
    """UNet: to_q/k/v/out.0 only; SD3-style joint attention adds add_*_proj / to_add_out."""
    from diffusers import SD3Transformer2DModel

    from sara.methods.lora import LoRA

    sd3 = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=2,
                                attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                caption_projection_dim=16, pooled_projection_dim=8, out_channels=4,
                                pos_embed_max_size=16)
    names = {n.rsplit(".", 1)[-1] for n, _ in LoRA().target_layers(sd3)}
    assert {"add_q_proj", "add_k_proj", "add_v_proj", "to_add_out", "to_q"} <= names
    unet_names = {n.split(".")[-1] for n, _ in LoRA().target_layers(micro_unet())}
    assert unet_names == {"to_q", "to_k", "to_v", "0"}
    m = LoRA(rank=3)
    k, ach = m.solve_budget(sd3, 5000)
    m.apply(sd3, budget=5000)
    assert m.num_trainable() == ach and m.rank == k


@pytest.mark.parametrize("name", ["sara", "lt_sft_dense", "lora"])
def test_resume_like_the_trainer(name, base, batch):
    """apply -> make_optimizer -> load_trained_state_dict -> optimizer.load_state_dict (what
    sara.train does on resume) continues bit-identically, across SaRA's re-selection too."""
    def run(steps, resume_at=None):
        den = copy.deepcopy(base)
        m = make(name)
        mod = m.apply(den, budget=BUDGET, ctx=ctx(batch))
        opt = m.make_optimizer(lr=3e-3)
        for i in range(steps):
            if i == resume_at:
                st = {"trained": {k: v.clone() for k, v in m.trained_state_dict().items()},
                      "opt": copy.deepcopy(opt.state_dict())}
                den = copy.deepcopy(base)
                m = make(name)
                mod = m.apply(den, budget=BUDGET, ctx=ctx(batch))
                opt = m.make_optimizer(lr=3e-3)
                m.load_trained_state_dict(st["trained"])
                opt.load_state_dict(st["opt"])
            loss_fn(mod, batch).backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        return outputs(mod, batch)

    assert torch.equal(run(STEPS), run(STEPS, resume_at=STEPS // 2 + 1))


def test_diffpruning_gates_and_projection(base, batch):
    """The gate phase learns a diff; when the L0 penalty closes the gates the projection still
    returns exactly k entries (closed gates ranked by |δ|); entries start from W0 + ẑ δ."""
    m = instantiate_method("diffpruning", gate_steps=3, l0_lambda=1e-4)
    den = copy.deepcopy(base)
    m.apply(den, budget=500, ctx=ctx(batch))
    info = m.record()["gate_phase"]
    assert info["steps"] == 3 and m.num_trainable() == 500
    assert not any("parametrizations" in n for n, _ in den.named_parameters())
    moved = (m.sparse.values.detach() != m.sparse.initial).sum()
    assert int(moved) > 0  # the learned diff is carried into phase 2
    closed = instantiate_method("diffpruning", gate_steps=2, log_alpha_init=-10.0)
    closed.apply(copy.deepcopy(base), budget=300, ctx=ctx(batch))
    assert closed.record()["gate_phase"]["nonzero_gated_diff"] == 0 and closed.num_trainable() == 300


def test_adaptformer_on_sd3_joint_blocks():
    from diffusers import SD3Transformer2DModel

    from sara.methods.adaptformer import AdaptFormer, ParallelAdapter

    torch.manual_seed(0)
    sd3 = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, num_layers=2,
                                attention_head_dim=8, num_attention_heads=2, joint_attention_dim=16,
                                caption_projection_dim=16, pooled_projection_dim=8, out_channels=4,
                                pos_embed_max_size=16)
    x, ehs, pooled, t = torch.randn(1, 4, 8, 8), torch.randn(1, 3, 16), torch.randn(1, 8), torch.tensor([10])
    with torch.no_grad():
        want = sd3(x, ehs, pooled, t).sample
    m = AdaptFormer()
    b, achieved = m.solve_budget(sd3, 600)
    m.apply(sd3, budget=600)
    assert m.num_trainable() == achieved and m.bottleneck == b
    assert sum(isinstance(x, ParallelAdapter) for x in sd3.modules()) == 2  # one per block's ff
    with torch.no_grad():  # up-projection zero-init: the function is unchanged at start
        assert torch.equal(sd3(x, ehs, pooled, t).sample, want)


def test_load_onto_a_different_selection_restores_w0(base, batch):
    """Loading a checkpoint whose entries differ from the applied selection puts W0 back first:
    the result equals a restore onto the plain base."""
    a, mod_a, _, _ = train("random", base, batch, steps=2)
    want = outputs(mod_a, batch)
    other = instantiate_method("random")
    den = copy.deepcopy(base)
    other.apply(den, budget=BUDGET, ctx=PrepareContext(steps=STEPS, seed=123))  # other entries
    with torch.no_grad():
        other.sparse.values.add_(1.0)  # and other values
    other.load_trained_state_dict(a.trained_state_dict())
    assert torch.equal(outputs(den, batch), want)
    plain = other.merged(den)
    for (n, p), (_, q) in zip(plain.named_parameters(), mod_a.named_parameters()):
        assert torch.equal(p, q), n
