"""The experiment hooks (sara.hooks; experiments/README.md, "hooks") end to end on the
stand-ins of tests/conftest.py, through the real experiment files (``+experiment=<id>``):

* ``diagnostics.prune_threshold`` (pruning, Fig. 2): exactly the entries with |w| < θ are zeroed
  in the sampled denoiser, the pruned fraction is recorded;
* ``diagnostics.migration_*`` (migration, Fig. 3): the tracker's curve at 0, every N steps and the
  end, in result.json and migration.json;
* ``delta.*`` (scaling / merging, App. F / G): α = 0 samples the base model and α = 1 the trained
  one, bit for bit; β1·ΔP1 + β2·ΔP2 of two runs; the dense path of non-sparse methods; a missing
  source names its path and the command that makes it;
* ``diagnostics.subspace`` / ``share_below`` (analysis, ablation);
* unknown keys and wrong types under ``diagnostics`` / ``delta`` fail naming the key;
* the FID reference folder of ``data=pretrain``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from conftest import StubBackbone, compose_conf
from sara.data.build import ensure_pretrain_reference, pretrain_reference_dir
from sara.hooks.schema import HookConfigError, validate_hooks
from sara.record import run_dir_for
from sara.runs import execute

STUB = ["backbone=stub", "data=stub", "eval=smoke", "hydra/job_logging=disabled"]


compose = compose_conf


def run(conf, overrides, out):
    cfg = compose(conf, STUB + [f"output_root={out}"] + overrides)
    d = run_dir_for(cfg)
    rec = execute(cfg, d)
    return rec, d


def base_weights():
    return {k: v.detach().clone() for k, v in StubBackbone().denoiser.state_dict().items()}


# --------------------------------------------------------------------------- pruning (Fig. 2)
def test_pruning_zeroes_exactly_the_entries_below_theta(stub_conf, stub_world, tmp_path, sampled):
    theta = 0.05
    rec, d = run(stub_conf, ["+experiment=pruning", "data=stub", "eval.metrics=[]",
                             f"diagnostics.prune_threshold={theta}"], tmp_path / "runs")
    assert rec["status"] == "complete" and rec["steps"] == 0
    assert d.parts[-6] == f"pruning--th{theta}"
    assert not (d / "checkpoint").exists()  # nothing trained, nothing checkpointed
    w0, (w,) = base_weights(), sampled
    below = total = 0
    for k, p in w0.items():
        if not p.is_floating_point():
            continue
        mask = p.abs() < theta
        assert torch.equal(w[k][mask], torch.zeros_like(p[mask])), k
        assert torch.equal(w[k][~mask], p[~mask]), k
        below += int(mask.sum())
        total += p.numel()
    info = rec["diagnostics"]["prune"]
    assert info == {"threshold": theta, "pruned": below, "total": total, "fraction": below / total}
    assert 0 < info["fraction"] < 1

    from sara.results import load_results

    row = load_results(tmp_path / "runs").iloc[0]
    assert row["experiment"] == "pruning" and row["prune_threshold"] == theta
    assert row["prune_fraction"] == pytest.approx(below / total)


def test_pruning_threshold_zero_is_the_untouched_model(stub_conf, stub_world, tmp_path, sampled):
    rec, _ = run(stub_conf, ["+experiment=pruning", "data=stub", "eval.metrics=[]"], tmp_path)
    assert rec["diagnostics"]["prune"]["pruned"] == 0
    w0 = base_weights()
    assert all(torch.equal(sampled[0][k], v) for k, v in w0.items())


# --------------------------------------------------------------------------- migration (Fig. 3)
def test_migration_curve_is_recorded(stub_conf, stub_world, tmp_path):
    rec, d = run(stub_conf, ["+experiment=migration", "data=stub", "train.steps=5",
                             "train.batch_size=2", "train.lr=0.05", "train.warmup_steps=0",
                             "diagnostics.migration_every=2", "diagnostics.migration_threshold=0.05"],
                 tmp_path / "runs")
    mig = rec["diagnostics"]["migration"]
    assert mig["threshold"] == 0.05
    hist = mig["history"]
    assert [r["step"] for r in hist] == [0, 2, 4, 5]  # step 0, every 2 steps, the end
    first = hist[0]
    assert first["still_below"] == 1.0 and first["new_below"] == 0.0 and first["stayed"] == first[
        "initial_below"] > 0
    last = hist[-1]
    assert last["still_below"] < 1.0 and last["newly_below"] > 0  # lr 0.05 moves entries across θ
    for r in hist:
        assert r["stayed"] + r["newly_below"] == r["now_below"]
    # the side file holds the same curve (a resumed run starts from it)
    assert json.loads((d / "migration.json").read_text()) == mig

    from sara.results import decode, load_results

    row = load_results(tmp_path / "runs").iloc[0]
    assert decode(row["migration"]) == mig



def test_migration_curve_survives_a_resume(stub_conf, stub_world, tmp_path, monkeypatch):
    """Killed in step 4 (last checkpoint: step 2), re-run: the curve equals an uninterrupted one."""
    args = ["+experiment=migration", "data=stub", "train=smoke", "train.steps=5", "train.batch_size=2",
            "train.lr=0.05", "diagnostics.migration_every=1", "diagnostics.migration_threshold=0.05"]
    straight, _ = run(stub_conf, args, tmp_path / "a")

    class Kill(Exception):
        pass

    real = StubBackbone.training_loss
    calls = {"n": 0}

    def dying(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 4:
            raise Kill()
        return real(self, *a, **k)

    monkeypatch.setattr(StubBackbone, "training_loss", dying)
    with pytest.raises(Kill):
        run(stub_conf, args, tmp_path / "b")
    d = tmp_path / "b/migration/stub/StubStyle/full/none/seed0"
    assert [r["step"] for r in json.loads((d / "migration.json").read_text())["history"]] == [0, 1, 2, 3]
    resumed, _ = run(stub_conf, args, tmp_path / "b")
    assert resumed["train"]["resumed_from"] == 2
    assert resumed["diagnostics"]["migration"] == straight["diagnostics"]["migration"]


# --------------------------------------------------------------------------- scaling / merging
SOURCE = ["+experiment=style", "data=stub", "method=sara", "budget=50M", "train=smoke",
          "eval=smoke", "eval.metrics=[]", "train.lr=0.01"]


def images(d):
    return [p.read_bytes() for p in sorted((d / "samples").glob("*.png"))]


def test_scaling_alpha_0_is_the_base_model_and_alpha_1_the_trained_one(stub_conf, stub_world, tmp_path,
                                                                      sampled):
    out = tmp_path / "runs"
    src, src_dir = run(stub_conf, SOURCE, out)  # the `style` run scaling.yaml points at
    assert src_dir == out / "style/stub/StubStyle/sara/50M/seed0"
    base, base_dir = run(stub_conf, ["data=stub", "method=sara", "budget=50M", "train.steps=0",
                                     "eval.metrics=[]", "experiment_name=base"], out)
    trained_w, base_w = sampled[0], sampled[1]
    assert any(not torch.equal(trained_w[k], base_w[k]) for k in base_w)
    recs = {}
    for alpha in (0.0, 1.0, 0.5):
        recs[alpha], d = run(stub_conf, ["+experiment=scaling", "data=stub", "eval.metrics=[]",
                                         f"delta.alpha={alpha}"], out)
        assert d.parts[-6] == f"scaling--a{alpha}"
        w = sampled[-1]
        if alpha == 0.0:
            assert all(torch.equal(w[k], base_w[k]) for k in base_w)
            assert images(d) == images(base_dir)
        elif alpha == 1.0:
            assert all(torch.equal(w[k], trained_w[k]) for k in base_w)
            assert images(d) == images(src_dir)
        else:
            for k in base_w:
                torch.testing.assert_close(w[k], base_w[k] + 0.5 * (trained_w[k] - base_w[k]))
    info = recs[1.0]["delta"]
    assert info["alpha"] == 1.0 and len(info["sources"]) == 1
    s = info["sources"][0]
    assert s["kind"] == "sparse" and s["run_dir"] == str(src_dir) and s["entries"] == src["trainable_params"]

    from sara.results import load_results

    df = load_results(out, experiment="scaling")
    assert sorted(df["alpha"]) == [0.0, 0.5, 1.0]


def test_merging_adds_two_weighted_deltas(stub_conf, stub_world, tmp_path, sampled):
    out = tmp_path / "runs"
    run(stub_conf, SOURCE, out)
    run(stub_conf, SOURCE + ["data.name=Other", "data.seed=3"], out)
    a, b = sampled[0], sampled[1]
    w0 = base_weights()
    for b1, b2 in ((1.0, 1.0), (0.0, 0.0), (0.0, 1.0), (0.5, 2.0)):
        rec, d = run(stub_conf, ["+experiment=merging", "data=stub", "data.name=StubStyle",
                                 "delta.merge_with=Other",
                                 "eval.metrics=[]", f"delta.beta1={b1}", f"delta.beta2={b2}"], out)
        assert d.parts[-6] == f"merging--Other-b{b1}-{b2}"
        assert [s["key"] for s in rec["delta"]["sources"]] == ["delta.source", "delta.merge_source"]
        w = sampled[-1]
        for k in w0:
            want = w0[k] + b1 * (a[k] - w0[k]) + b2 * (b[k] - w0[k])
            if b1 == b2 == 0.0:
                assert torch.equal(w[k], w0[k]), k
            else:
                torch.testing.assert_close(w[k], want, rtol=0, atol=1e-6)
    rows = [json.loads(l) for l in (d / "samples/prompts.jsonl").read_text().splitlines()]
    assert rows[0]["text"].startswith("StubStyle style, Other style, ")


def test_dense_delta_of_a_non_sparse_method(stub_conf, stub_world, tmp_path, sampled):
    """Full fine-tuning's state is not sparse: restored with the source's method, merged, scaled."""
    out = tmp_path / "runs"
    src = ["data=stub", "method=full", "train=smoke", "eval=smoke", "train.lr=0.01",
           "experiment_name=src"]
    run(stub_conf, src, out)
    trained = sampled[0]
    w0 = base_weights()
    rec, _ = run(stub_conf, ["+experiment=scaling", "data=stub", "method=full", "budget=none",
                             "eval.metrics=[]", "delta.alpha=0.5",
                             f"delta.source={out}/src/stub/StubStyle/full/none/seed0"], out)
    assert rec["delta"]["sources"][0]["kind"] == "dense"
    for k in w0:
        torch.testing.assert_close(sampled[-1][k], w0[k] + 0.5 * (trained[k] - w0[k]))


def test_missing_delta_source_names_path_and_command(stub_conf, stub_world, tmp_path):
    out = tmp_path / "runs"
    cfg = compose(stub_conf, STUB + [f"output_root={out}", "+experiment=scaling", "data=stub"])
    with pytest.raises(FileNotFoundError) as ei:
        execute(cfg, run_dir_for(cfg))
    msg = str(ei.value)
    assert "delta.source" in msg and str(out / "style/stub/StubStyle/sara/50M/seed0") in msg
    assert ("python run.py +experiment=style backbone=stub data.name=StubStyle method=sara budget=50M "
            f"seed=0 output_root={out}") in msg
    failed = json.loads((run_dir_for(cfg) / "failed.json").read_text())
    assert "delta.source" in failed["message"]


# --------------------------------------------------------------------------- analysis / ablation
def test_subspace_and_amplification_are_recorded(stub_conf, stub_world, tmp_path):
    rec, _ = run(stub_conf, ["+experiment=analysis", "data=stub", "method=sara", "budget=50M",
                             "train=smoke", "eval=smoke", "eval.metrics=[]", "train.lr=0.01",
                             "diagnostics.subspace_max_dim=4", "diagnostics.delta_u_dim=2",
                             "diagnostics.amplification_ranks=[1,2]"], tmp_path / "runs")
    sub, amp = rec["diagnostics"]["subspace"], rec["diagnostics"]["amplification"]
    layers = sorted(r["layer"] for r in sub)
    assert layers and all("mid_block" in x and x.endswith(("to_k.weight", "to_v.weight")) for x in layers)
    for r in sub:
        assert len(r["phi"]) == len(r["phi"][0]) == r["max_dim"] == 4
        assert len(r["phi_random"]) == 4 and len(r["phi_w0_random"]) == 4
        assert len(r["delta_u"]) == r["shape"][0] and len(r["delta_u"][0]) == 2
    assert sorted({r["r"] for r in amp}) == [1, 2] and {r["layer"] for r in amp} == set(layers)
    assert all(r["delta_norm"] > 0 for r in amp)  # the sparse update touched these matrices


def test_share_below_is_recorded(stub_conf, stub_world, tmp_path):
    rec, _ = run(stub_conf, ["+experiment=ablation", "data=stub", "method=sara", "train=smoke",
                             "eval=smoke", "eval.metrics=[]", "train.lr=0.01"], tmp_path / "runs")
    d = rec["diagnostics"]
    assert 0.0 <= d["share_below"] <= 1.0
    assert d["share_below_threshold"] == pytest.approx(rec["method_record"]["threshold"])


# --------------------------------------------------------------------------- validation
@pytest.mark.parametrize("cfg, key", [
    ({"diagnostics": {"prune_treshold": 0.1}}, "diagnostics.prune_treshold"),
    ({"diagnostics": {"prune_threshold": "big"}}, "diagnostics.prune_threshold"),
    ({"diagnostics": {"prune_threshold": -1.0}}, "diagnostics.prune_threshold"),
    ({"diagnostics": {"migration_every": 2.5, "migration_threshold": 0.1}}, "diagnostics.migration_every"),
    ({"diagnostics": {"migration_every": 10}}, "diagnostics.migration_threshold"),
    ({"diagnostics": {"subspace": "yes"}}, "diagnostics.subspace"),
    ({"diagnostics": {"subspace_patterns": "*to_k*"}}, "diagnostics.subspace_patterns"),
    ({"diagnostics": {"amplification_ranks": [1, 0]}}, "diagnostics.amplification_ranks"),
    ({"diagnostics": [1, 2]}, "diagnostics"),
    ({"delta": {"sorce": "x"}}, "delta.sorce"),
    ({"delta": {"source": "x", "alpha": "one"}, "train": {"steps": 0}}, "delta.alpha"),
    ({"delta": {"source": "x", "beta2": True}, "train": {"steps": 0}}, "delta.beta2"),
    ({"delta": {"source": "x"}, "train": {"steps": 100}}, "train.steps"),
    ({"delta": {"source": "x", "merge_with": "B"}, "train": {"steps": 0}}, "delta.merge_source"),
    ({"delta": {"merge_source": "y"}}, "delta.merge_source"),
])
def test_bad_hook_settings_name_the_key(cfg, key):
    with pytest.raises(HookConfigError, match=key.replace(".", r"\.")):
        validate_hooks(cfg)


def test_hook_defaults_and_typo_hint():
    diag, delta = validate_hooks({"diagnostics": {"prune_threshold": 0}, "delta": {"alpha": 2.0}})
    assert diag["prune_threshold"] == 0.0 and diag["subspace"] is False and delta is None
    _, delta = validate_hooks({"delta": {"source": "runs/x", "alpha": 1}, "train": {"steps": 0}})
    assert delta == {"source": "runs/x", "alpha": 1.0, "merge_with": None, "merge_source": None,
                     "beta1": 1.0, "beta2": 1.0}
    with pytest.raises(HookConfigError, match="did you mean diagnostics.migration_every"):
        validate_hooks({"diagnostics": {"migration_evry": 5}})


def test_bad_key_fails_the_run_before_any_work(stub_conf, stub_world, tmp_path):
    cfg = compose(stub_conf, STUB + [f"output_root={tmp_path}", "+diagnostics.prune_treshold=0.1"])
    with pytest.raises(HookConfigError, match=r"diagnostics\.prune_treshold: unknown key"):
        execute(cfg, run_dir_for(cfg))
    assert "prune_treshold" in json.loads((run_dir_for(cfg) / "failed.json").read_text())["message"]


def test_config_yaml_lists_every_hook_off_with_the_validated_defaults():
    """conf/config.yaml's diagnostics / delta groups equal sara.hooks' defaults key for key, so a
    hook is set without `+` and does nothing unless set."""
    from omegaconf import OmegaConf

    from conftest import CONF
    from sara.hooks.schema import DELTA_KEYS, DIAGNOSTICS_KEYS

    base = OmegaConf.to_container(OmegaConf.load(CONF / "config.yaml"))
    for group, spec in (("diagnostics", DIAGNOSTICS_KEYS), ("delta", DELTA_KEYS)):
        assert base[group] == {k: default for k, (_, default, _) in spec.items()}, group
    assert validate_hooks(base) == ({k: d for k, (_, d, _) in DIAGNOSTICS_KEYS.items()}, None)


def test_hook_set_without_plus_and_old_records_stay_done(stub_conf, stub_world, tmp_path):
    cfg = compose(stub_conf, STUB + [f"output_root={tmp_path}", "diagnostics.prune_threshold=0.1"])
    assert cfg.diagnostics.prune_threshold == 0.1
    # a record written before config.yaml listed the groups (no diagnostics / delta in its config)
    # is the same run as one with every hook at its default: "already done", no config-diff warning
    cfg = compose(stub_conf, STUB + [f"output_root={tmp_path}", "train.steps=2"])
    d = run_dir_for(cfg)
    rec = execute(cfg, d)
    old = dict(rec, config={k: v for k, v in rec["config"].items() if k not in ("diagnostics", "delta")})
    (d / "result.json").write_text(json.dumps(old))
    # a handler on sara.runs' own logger, enabled: a logging.config set-up in another test (Hydra's
    # job logging) may have disabled the existing loggers or stopped their propagation
    import logging

    import sara.runs

    seen: list[str] = []
    handler = logging.Handler(logging.INFO)
    handler.emit = lambda r: seen.append(r.getMessage())
    logger = sara.runs.log
    old_level, old_disabled = logger.level, logger.disabled
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.disabled = False
    try:
        assert execute(cfg, d)["finished_at"] == rec["finished_at"]
        text = "\n".join(seen)
        assert "already done" in text and "differs" not in text
        # ... while a record of a run with another hook setting is reported as differing
        cfg2 = compose(stub_conf, STUB + [f"output_root={tmp_path}", "train.steps=2",
                                          "diagnostics.share_below=true"])
        from sara.rundir import StaleRunError

        with pytest.raises(StaleRunError, match=r"differs in \[diagnostics.share_below\]"):
            execute(cfg2, d)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
        logger.disabled = old_disabled


# --------------------------------------------------------------------------- FID reference
def test_pretrain_reference_folder(tmp_path):
    cfg = {"kind": "pretrain", "root": str(tmp_path), "seed": 0, "reference_images": 5}
    d = ensure_pretrain_reference(cfg, 16)
    assert d == pretrain_reference_dir(cfg, 16) == tmp_path / "pretrain_val/seed0_16px_n5"
    from PIL import Image

    from sara.data.domain import PretrainDomain
    from sara.data.procedural import caption

    rows = [json.loads(l) for l in (d / "metadata.jsonl").read_text().splitlines()]
    assert [r["file_name"] for r in rows] == [f"{i:04d}.png" for i in range(5)]
    val = PretrainDomain(16, split="val", seed=0)
    assert rows[3]["text"] == caption(val.scene(3))
    import numpy as np

    assert np.array_equal(np.asarray(Image.open(d / "0003.png")), val.image(3))
    stamp = (d / "0000.png").stat().st_mtime_ns
    assert ensure_pretrain_reference(cfg, 16) == d and (d / "0000.png").stat().st_mtime_ns == stamp
    (d / "0004.png").unlink()  # incomplete: rewritten
    ensure_pretrain_reference(cfg, 16)
    assert (d / "0004.png").is_file() and not list(tmp_path.glob("pretrain_val/.*tmp*"))
    with pytest.raises(ValueError, match="reference_images"):
        ensure_pretrain_reference({**cfg, "reference_images": 5000}, 16)


def test_pretrain_data_follows_the_shipped_base_looks(tmp_path):
    """data=pretrain draws the looks the shipped base was last trained on, for training and for the
    FID reference (its own folder, so a plain-looks reference is never taken for it)."""
    import numpy as np
    from omegaconf import OmegaConf
    from PIL import Image

    from sara.data.build import build_dataset
    from sara.data.domain import PretrainDomain

    conf = OmegaConf.to_container(OmegaConf.load(Path(__file__).resolve().parents[1] / "conf/data/pretrain.yaml"))
    shipped = json.loads((Path(__file__).resolve().parents[1] / "sara/zoo/tiny/manifest.json").read_text())
    assert conf["looks"] == shipped["looks"] == "varied"
    cfg = {**conf, "root": str(tmp_path), "reference_images": 3}
    train, _ = build_dataset(cfg, 16)
    assert train.looks == "varied"
    d = ensure_pretrain_reference(cfg, 16)
    assert d.name == "seed0_16px_n3_varied" and d != pretrain_reference_dir({**cfg, "looks": "plain"}, 16)
    val = PretrainDomain(16, split="val", seed=0, looks="varied")
    assert np.array_equal(np.asarray(Image.open(d / "0002.png")), val.image(2))
    with pytest.raises(ValueError, match="looks must be one of"):
        ensure_pretrain_reference({**cfg, "looks": "neon"}, 16)


def test_pretrain_fid_uses_the_reference_folder(stub_conf, stub_world, tmp_path, monkeypatch):
    """data=pretrain with FID: sara.evaluate gets the validation-split reference folder."""
    import sara.evaluate

    got = {}

    def fake(images_dir, prompts, dataset_root, metrics, device):
        got["root"] = dataset_root
        return {"fid": 1.0, "clip_score": 0.5}

    monkeypatch.setattr(sara.evaluate, "evaluate", fake)
    cfg = compose(stub_conf, ["+experiment=pruning", "backbone=stub", f"data.root={tmp_path / 'data'}",
                              "data.reference_images=4", "eval=smoke", "eval.metrics=[fid,clip_score]",
                              f"output_root={tmp_path / 'runs'}"])
    assert cfg.data.kind == "pretrain"
    rec = execute(cfg, run_dir_for(cfg))
    ref = tmp_path / "data/pretrain_val/seed0_8px_n4_varied"
    assert got["root"] == str(ref) and len(list(ref.glob("*.png"))) == 4
    assert rec["metrics"]["fid"] == 1.0 and rec["paths"]["dataset"] == str(ref)


def test_delta_of_another_backbone_is_refused(stub_conf, stub_world, tmp_path):
    out = tmp_path / "runs"
    _, src_dir = run(stub_conf, SOURCE, out)
    cfg = compose(stub_conf, STUB + [f"output_root={out}", "+experiment=scaling", "data=stub",
                                     "backbone.name=other", f"delta.source={src_dir}"])
    with pytest.raises(ValueError, match="fine-tuned backbone 'stub', this run samples backbone 'other'"):
        execute(cfg, run_dir_for(cfg))


# --- train.lr policy -------------------------------------------------------------------------
def test_resolve_lr_policies():
    import torch
    from sara.core.optimizer import lr_from_threshold
    from sara.core.selection import threshold_for_budget
    from sara.budget import resolve_lr

    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(16, 16), torch.nn.Linear(16, 4))
    with torch.no_grad():  # diffusion-model-like magnitudes, so θ lands in Eq. 12's range
        for p in net.parameters():
            p.mul_(1e-2)
    assert resolve_lr(3e-4, net, 10)[0] == 3e-4
    assert resolve_lr(None, net, 10) == (None, {"policy": "method_default", "lr": None})
    lr, rec = resolve_lr("eq12", net, 50)
    theta = threshold_for_budget(net, 50)
    assert rec["threshold"] == theta and lr == lr_from_threshold(theta) and 1e-4 < lr <= 1e-3
    assert resolve_lr("eq12", net, None)[0] is None
    with pytest.raises(ValueError, match="train.lr"):
        resolve_lr("fast", net, 50)
