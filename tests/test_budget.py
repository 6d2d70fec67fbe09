"""Budget matching (sara.budget): every method solves its knob so that its trainable count is
within 5% of the budget (the integer knobs per module), on the tiny backbone's architecture, a
latent family's and the SD 1.5 UNet's (no weights needed); the per-module knobs are deterministic
and are what peft / the adapters build."""
from __future__ import annotations

import copy
import json

import pytest
import torch

from sara.budget import (REFERENCE_PARAMS, budget_config, budget_target, build_denoiser,
                         instantiate_method, main, method_names, parse_budget, solve_knob, target_for)

BUDGETS = ("5M", "20M", "50M")
SMALLEST = "5M"  # the smallest configured budget: where one global integer knob misses most


def test_parse_budget():
    assert parse_budget("5M") == 5e6 and parse_budget("20m") == 2e7 and parse_budget("1.5k") == 1500
    assert parse_budget("0.01") == 0.01 and parse_budget(3) == 3.0
    assert parse_budget("none") is None and parse_budget(None) is None
    with pytest.raises(ValueError, match="cannot read budget"):
        parse_budget("five million")


def test_target_for_scales_to_the_same_fraction():
    assert target_for(5e6, REFERENCE_PARAMS, REFERENCE_PARAMS) == 5_000_000
    d = 2_799_107
    assert target_for(5e6, REFERENCE_PARAMS, d) == round(5e6 / REFERENCE_PARAMS * d)
    assert target_for(0.01, REFERENCE_PARAMS, 1000) == 10          # a fraction
    assert target_for(1234, None, 10**6) == 1234                     # absolute
    assert target_for(None, REFERENCE_PARAMS, d) is None
    assert target_for(1e-9, REFERENCE_PARAMS, 10) == 1               # at least one
    with pytest.raises(ValueError):
        target_for(-1, REFERENCE_PARAMS, d)
    assert budget_target({"params": 5e6, "reference_params": REFERENCE_PARAMS}, d) == \
        target_for(5e6, REFERENCE_PARAMS, d)
    assert budget_target({"params": None}, d) is None and budget_target("20M", d) == target_for(2e7, REFERENCE_PARAMS, d)


def test_budget_configs():
    for name, params in (("5M", 5_000_000), ("10M", 10_000_000), ("20M", 20_000_000), ("50M", 50_000_000),
                         ("none", None)):
        cfg = budget_config(name)
        assert cfg["name"] == name and cfg["params"] == params
        assert cfg["reference_params"] == REFERENCE_PARAMS


def check_close(method, den, rec):
    """Within 5% of the target; the adapter methods counted on the model they build."""
    from sara.methods.base import AddedParamsMethod

    if not rec["knob"]:  # full fine-tuning: every entry; Textual Inversion: no denoiser entry
        want = 0 if getattr(method, "trains_text_embedding", False) else sum(p.numel() for p in den.parameters())
        assert rec["achieved"] == want
        return
    assert abs(rec["rel_error"]) <= 0.05, rec
    if isinstance(method, AddedParamsMethod):
        assert rec["counted_on"] == "built model" and "solver_count" not in rec, rec


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    den = build_denoiser("tiny", random_init=True, device="cpu")
    den.requires_grad_(False)
    return den


@pytest.mark.parametrize("name", method_names())
def test_every_method_hits_every_budget_on_tiny(name, tiny):
    n = sum(p.numel() for p in tiny.parameters())
    m = instantiate_method(name)
    for b in BUDGETS:
        target = budget_target(budget_config(b), n)
        rec = solve_knob(m, tiny, target)
        assert rec["target"] == target
        check_close(m, tiny, rec)
        if m.knob in ("k", "threshold"):
            assert rec["achieved"] == target  # exact on random-init weights (no ties)


@pytest.mark.parametrize("name", ["lora", "dora", "adaptformer"])
def test_counted_knob_equals_the_built_adapters_on_tiny_meta(name):
    den = build_denoiser("tiny", random_init=True, device="meta")
    n = sum(p.numel() for p in den.parameters())
    m = instantiate_method(name)
    target = budget_target(budget_config("20M"), n)
    knob, achieved = m.solve_budget(den, target)
    m.apply(den, budget=target)
    assert m.knob_value == knob and m.num_trainable() == achieved


def test_every_method_hits_the_smallest_budget_on_a_latent_family():
    """tiny_sd3 (a transformer with joint attention; random weights): every method within 5% of
    the smallest budget, where one rank step of LoRA is ~18% of it."""
    from sara.budget import run

    recs = run("tiny_sd3", [SMALLEST], random_init=True, log=lambda s: None)
    den = build_denoiser("tiny_sd3", random_init=True, device="meta")
    assert {r["method"] for r in recs} == set(method_names())
    for rec in recs:
        check_close(instantiate_method(rec["method"]), den, rec)


def test_spread_subset_and_per_module_int_knob():
    from sara.methods._util import per_module_int_knob, spread_indices, spread_subset

    assert spread_indices(10, 2) == [2, 7] and spread_indices(10, 10) == list(range(10))
    assert spread_indices(5, 0) == []
    assert spread_subset([10] * 8, 31) == spread_indices(8, 3)        # 30 is nearest
    assert spread_subset([10] * 8, 4) == []                           # nothing is nearer than 0
    assert spread_subset([10] * 8, 500, max_size=3) == spread_indices(8, 3)
    # 8 modules of const + 10 u (consts 300 in all): base u = 8 (940 <= 1000), u = 9 on 6 of them
    u, up = per_module_int_knob(1000, [100] * 3 + [0] * 5, [10] * 8)
    assert u == 8 and up == spread_indices(8, 6)
    assert per_module_int_knob(5, [0, 0], [10, 10]) == (1, [])          # the lowest value is over
    assert per_module_int_knob(158, [0] * 8, [10] * 8) == (2, [])       # all at u + 1: the base
    with pytest.raises(ValueError, match="does not change"):
        per_module_int_knob(10, [1], [0])


@pytest.mark.parametrize("name", ["lora", "dora", "adaptformer", "shira"])
def test_per_module_knobs_are_deterministic_and_built(name):
    """The per-module values depend on the architecture only (two differently seeded builds, two
    solves: one pattern) and are what the built model has, module by module."""
    dens = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        dens.append(build_denoiser("tiny", random_init=True))
    n = sum(p.numel() for p in dens[0].parameters())
    target = budget_target(budget_config(SMALLEST), n)
    solved = []
    for den in dens + dens[:1]:
        m = instantiate_method(name)
        solved.append((m.solve_budget(den, target), m.knob_pattern))
    assert solved[0] == solved[1] == solved[2]
    (base, achieved), pattern = solved[0]
    assert pattern, "the smallest budget needs more than one value"
    m = instantiate_method(name)
    m.apply(copy.deepcopy(dens[0]), budget=target)
    assert m.num_trainable() == achieved and m.record()["knob_pattern"] == pattern
    if name == "adaptformer":  # each adapter's width
        built = {k: ad.down.out_features for k, ad in m._adapters.items()}
    else:  # each peft layer's rank
        weight = "shira_weight" if name == "shira" else "lora_A"
        built = {k: mod.r["default"] for k, mod in m.module.named_modules()
                 if "default" in getattr(mod, weight, {})}
    if name == "shira":  # one rank; the left-out layers are not adapted at all
        assert set(built.values()) == {base} and not set(built) & set(pattern)
        assert set(pattern.values()) == {0}
    else:
        assert {k: v for k, v in built.items() if v != base} == pattern
        assert set(pattern.values()) == {base + 1}


def test_lora_alpha_follows_each_modules_rank(tmp_path):
    """alpha/r is the same scale on every module: alpha = rank (null) -> 1; alpha = 8 -> 8 / base."""
    torch.manual_seed(0)
    den = build_denoiser("tiny", random_init=True)
    target = budget_target(budget_config(SMALLEST), sum(p.numel() for p in den.parameters()))
    for alpha in (None, 8):
        m = instantiate_method("lora", alpha=alpha)
        m.apply(copy.deepcopy(den), budget=target)
        scales = [mod.scaling["default"] for _, mod in m.module.named_modules()
                  if "default" in getattr(mod, "lora_A", {})]
        want = 1.0 if alpha is None else 8 / m.rank
        assert m.rank_pattern and all(s == pytest.approx(want) for s in scales), scales
        # the peft folder keeps the pattern: loading it rebuilds the same per-module ranks
        m.save_weights(tmp_path / str(alpha))
        again = instantiate_method("lora", alpha=alpha)
        again.load_weights(copy.deepcopy(den), tmp_path / str(alpha))
        assert (again.rank, again.rank_pattern) == (m.rank, m.rank_pattern)
        assert again.num_trainable() == m.num_trainable()


def test_bad_patterns_are_refused():
    from sara.methods.adaptformer import AdaptFormer
    from sara.methods.lora import LoRA
    from sara.methods.shira import SHiRA

    den = build_denoiser("tiny", random_init=True, device="meta")
    with pytest.raises(ValueError, match=r"rank_pattern\['x'\] must be an integer >= 1"):
        LoRA(rank_pattern={"x": 0})
    with pytest.raises(ValueError, match="not adapted"):
        LoRA(rank_pattern={"no_such_module": 3}).apply(copy.deepcopy(den))
    with pytest.raises(ValueError, match="not adapted"):
        AdaptFormer(bottleneck_pattern={"nope.ff": 3}).apply(copy.deepcopy(den))
    with pytest.raises(ValueError, match="only map layers to 0"):
        SHiRA(rank_pattern={"time_embedding.linear_1": 2})
    with pytest.raises(ValueError, match="does not match"):
        SHiRA(rank_pattern={"nope": 0}).apply(copy.deepcopy(den))


@pytest.fixture(scope="module")
def sd15_meta():
    return build_denoiser("sd15", random_init=True, device="meta")


def test_sd15_architecture_counts_on_meta(sd15_meta):
    """LoRA / DoRA / AdaptFormer need only shapes: the SD 1.5 UNet on the meta device."""
    n = sum(p.numel() for p in sd15_meta.parameters())
    assert n == REFERENCE_PARAMS
    for name in ("lora", "dora", "adaptformer"):
        m = instantiate_method(name)
        for b in BUDGETS:
            rec = solve_knob(m, sd15_meta, budget_target(budget_config(b), n))
            assert rec["target"] == int(parse_budget(b))
            assert abs(rec["rel_error"]) <= 0.02, rec  # fine-grained knobs at this scale
    lora = instantiate_method("lora")
    lora.apply(copy.deepcopy(sd15_meta), budget=5_000_000)  # peft really builds what was counted
    assert lora.num_trainable() == lora.count_for_rank(sd15_meta, lora.rank, lora.rank_pattern)
    with pytest.raises(ValueError, match="meta"):
        instantiate_method("sara").solve_budget(sd15_meta, 5_000_000)


def test_cli_writes_records(tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["--backbone", "tiny", "--random-init", "--json", str(out), "--budgets", "5M,0.01",
                 "--methods", "sara,lora,lt_sft"]) == 0
    recs = json.loads(out.read_text())
    assert len(recs) == 6
    for r in recs:
        assert {"method", "budget", "knob", "knob_value", "target", "achieved"} <= set(r)
    by = {(r["method"], r["budget"]): r for r in recs}
    assert by[("lt_sft", "0.01")]["achieved"] == round(0.01 * recs[0]["denoiser_params"])
    assert by[("sara", "5M")]["knob"] == "threshold"
    lora = by[("lora", "5M")]  # the per-module ranks are in the record (a run's too)
    assert lora["knob_pattern"] and lora["knob_modules"] >= len(lora["knob_pattern"])
    assert lora["counted_on"] == "built model" and by[("sara", "5M")]["counted_on"] == "solver"
    assert "rel_err" in capsys.readouterr().out
    assert main(["--backbone", "tiny", "--random-init", "--budgets", "5M", "--methods", "lora",
                 "--markdown"]) == 0
    md = capsys.readouterr().out.splitlines()
    assert md[0].startswith("| method (knob) | 5M → ") and md[2].startswith("| `lora` (rank) | 1 (2 on ")


@pytest.mark.slow
def test_every_method_on_random_init_sd15():
    """All methods at 5M/20M/50M on the randomly initialised SD 1.5 UNet (3.4 GB on the CPU;
    ~10 minutes on 2 busy cores, the SaRA threshold solves dominate)."""
    from sara.budget import run

    torch.manual_seed(0)
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    den = build_denoiser("sd15", random_init=True, device=dev)
    recs = run("sd15", BUDGETS, denoiser=den, log=lambda s: None)
    assert {r["method"] for r in recs} == set(method_names())
    for rec in recs:
        assert rec["target"] == int(parse_budget(rec["budget"]))
        check_close(instantiate_method(rec["method"]), den, rec)


@pytest.mark.slow
def test_docs_budget_tables_are_the_commands_output():
    """docs/backbones.md's budget tables equal a fresh `python -m sara.budget --markdown` run
    (4 minutes on a busy 2-core CPU); after new weights, rerun scripts/budget_tables.py."""
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    out = subprocess.run([sys.executable, "scripts/budget_tables.py", "--check"], cwd=root,
                         capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr
