"""Tests of benchmarks/memory_speed.py (issue 7): the ratio printer's PASS/MISS logic on synthetic
records, the naive masked implementation, a fast in-process CLI run on a tiny UNet on CPU, and
(marked slow) the same CLI with one subprocess per method, as real runs do."""
from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "memory_speed.py"
GiB = 2**30


def _load():
    spec = importlib.util.spec_from_file_location("memory_speed", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    sys.modules["memory_speed"] = mod
    spec.loader.exec_module(mod)
    return mod


ms = _load()


def _rec(method, bs, peak_gib, step, floor_gib=None, dense_gib=0.0, trainable=50_000_000, res=256):
    return {"method": method, "batch_size": bs, "resolution": res, "device": "cpu", "budget": 50_000_000,
            "trainable": trainable, "peak_bytes": int(peak_gib * GiB), "step_s": step,
            "floor_bytes": None if floor_gib is None else int(floor_gib * GiB),
            "dense_grad_bytes_frozen": int(dense_gib * GiB), "arch": "sd15", "dtype": "fp32"}


def _status(records, which=("T1", "T2", "T3", "T4")):
    return {k: v for k, v in ((t["target"].split()[1], t["status"])
                              for t in ms.evaluate_targets(records)) if k in which}


def test_targets_all_pass():
    recs = []
    for bs in (1, 4):
        recs += [_rec("floor", bs, 9.0, 1.0, floor_gib=9.0),
                 _rec("sara", bs, 10.4, 1.05 * bs, floor_gib=10.0, dense_gib=3.2),
                 _rec("lt_sft", bs, 14.0, 1.2 * bs, floor_gib=10.0, dense_gib=3.2),
                 _rec("lora_dropout", bs, 12.0, 1.0 * bs, floor_gib=9.5)]
    assert _status(recs) == {"T1": "PASS", "T2": "PASS", "T3": "PASS", "T4": "PASS"}
    lines = ms.ratio_lines(recs)
    # the last lines are the PASS/MISS verdicts, one per target (T5-T7 after T1-T4)
    assert [ln.split()[0] for ln in lines[-7:-3]] == ["PASS"] * 4
    assert any("peak/floor" in ln for ln in lines)
    assert any("LT-SFT peak - 0.9 x dense_grad_bytes_frozen" in ln for ln in lines)


def test_targets_miss_and_na():
    recs = []
    for bs in (1, 4):
        recs += [_rec("sara", bs, 10.6, 1.2 * bs, floor_gib=10.0, dense_gib=3.2),  # 1.06 x floor: MISS
                 _rec("lt_sft", bs, 12.0, 1.2 * bs, dense_gib=3.2),  # 12 - 2.88 = 9.12 < 10.6: MISS
                 _rec("lora_dropout", bs, 10.0 if bs == 4 else 11.0, 1.0 * bs)]  # at bs 4 LoRA is smaller
    st = _status(recs)
    assert st == {"T1": "MISS", "T2": "MISS", "T3": "MISS", "T4": "MISS"}
    # T3 looks only at the largest batch size: make SaRA smaller there and it passes
    recs[-1]["peak_bytes"] = int(11 * GiB)
    assert _status(recs)["T3"] == "PASS"
    # T1 at exactly 1.05 passes; a method missing gives N/A
    only = [_rec("sara", 1, 10.5, 1.0, floor_gib=10.0)]
    st = _status(only)
    assert st["T1"] == "PASS" and st["T2"] == "N/A" and st["T3"] == "N/A" and st["T4"] == "N/A"
    # a failed record (peak None) counts as not measured
    failed = [_rec("sara", 1, 10.0, 1.0, floor_gib=10.0), _rec("lora_dropout", 1, 12.0, 1.0)]
    failed[1]["peak_bytes"] = None
    failed[1]["error"] = "out of memory"
    assert _status(failed)["T3"] == "N/A"


def test_targets_lora_peak_floor_wgrad_and_lora_step():
    recs = []
    for bs in (2, 4):
        recs += [_rec("sara", bs, 7.0, 10.4, floor_gib=6.8),
                 _rec("lora_dropout", bs, 7.5, 10.5),
                 _rec("floor_wgrad", bs, 6.5, 10.0)]
    st = _status(recs, ("T5", "T6", "T7"))
    assert st == {"T5": "PASS", "T6": "PASS", "T7": "PASS"}
    recs[0]["step_s"] = 10.6  # bs 2: 1.06 x floor_wgrad and above LoRA's step
    recs[0]["peak_bytes"] = int(7.6 * GiB)
    assert _status(recs, ("T5", "T6", "T7")) == {"T5": "MISS", "T6": "MISS", "T7": "MISS"}
    assert _status(recs[:1], ("T5", "T6", "T7")) == {"T5": "N/A", "T6": "N/A", "T7": "N/A"}


def test_fill_floor_formula():
    recs = [_rec("floor", 2, 8.0, 1.0), _rec("sara", 2, 9.0, 1.0, trainable=1000),
            _rec("lora", 2, 9.0, 1.0, trainable=1000)]
    recs[1].update(param_bytes=4, index_bytes_floor=4 * 1000)
    recs[2].update(param_bytes=4, index_bytes_floor=0)
    ms.fill_floor(recs)
    assert recs[0]["floor_bytes"] == int(8 * GiB)
    assert recs[1]["floor_bytes"] == int(8 * GiB) + 4 * 1000 * 4 + 4000
    assert recs[2]["floor_bytes"] == int(8 * GiB) + 4 * 1000 * 4


def test_budget_scaling():
    assert ms.scaled_target("50M", ms.REFERENCE_PARAMS) == 50_000_000
    assert ms.scaled_target("50M", ms.REFERENCE_PARAMS // 10) == pytest.approx(5_000_000, rel=1e-6)
    assert ms.parse_count("1.5k") == 1500


def test_naive_masked_keeps_frozen_entries_and_counts():
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Linear(32, 4))
    w0 = {n: p.detach().clone() for n, p in model.named_parameters()}
    theta = 0.05
    naive = ms.NaiveMaskedSelective(model, theta, lr=1e-2)
    masks = {n: (w0[n].abs() < theta) for n in w0}
    assert naive.trainable == sum(int(m.sum()) for m in masks.values())
    assert naive.mask_bytes == sum(m.numel() for m in masks.values())  # one bool per entry
    for _ in range(3):
        loss = model(torch.randn(8, 16)).square().mean()
        loss.backward()
        for p in model.parameters():  # dense gradient, masked in place
            if p.grad is not None:
                assert p.grad.shape == p.shape
        naive.optimizer.step()
        naive.optimizer.zero_grad(set_to_none=True)
    moved = 0
    for n, p in model.named_parameters():
        frozen = ~masks[n]
        assert torch.equal(p.detach()[frozen], w0[n][frozen]), n
        moved += int((p.detach()[masks[n]] != w0[n][masks[n]]).sum())
    assert moved > 0


TINY_UNET = {
    "_class_name": "UNet2DConditionModel", "sample_size": 8, "in_channels": 4, "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D"], "block_out_channels": [32, 64],
    "layers_per_block": 1, "cross_attention_dim": 32, "attention_head_dim": 8, "norm_num_groups": 8,
}


def _check_records(records, methods, bs, res):
    assert {r["method"] for r in records} == set(methods)
    for r in records:
        assert set(ms.RECORD_KEYS) <= set(r), r
        assert r.get("error") is None, r
        assert r["batch_size"] == bs and r["resolution"] == res and r["device"] == "cpu"
        assert r["peak_bytes"] > 0 and r["step_s"] > 0 and r["floor_bytes"] > 0
    by = {r["method"]: r for r in records}
    assert by["floor"]["trainable"] == 0
    return by


def test_cli_in_process_writes_valid_records(tmp_path, capsys):
    """The CLI on a tiny UNet, every method in this process (no subprocess start-up): valid
    records in --json, floor_bytes by the formula, a plot, and the ratios printed last."""
    pytest.importorskip("diffusers")
    cfg = tmp_path / "tiny_unet.json"
    cfg.write_text(json.dumps(TINY_UNET))
    out, png = tmp_path / "records.json", tmp_path / "fig5.png"
    rc = ms.main(["--arch", str(cfg), "--device", "cpu", "--resolution", "64", "--batch-sizes", "2",
                  "--budget", "50M", "--methods", "sara,sara_naive", "--references", "floor",
                  "--steps", "1", "--warmup", "1", "--fresh-process", "none", "--threads", "1",
                  "--json", str(out), "--plot", str(png)])
    assert rc == 0
    records = json.loads(out.read_text())
    by = _check_records(records, ("floor", "sara", "sara_naive"), 2, 64)
    target = ms.scaled_target("50M", records[0]["n_params"])
    assert by["sara"]["budget"] == target
    assert abs(by["sara"]["trainable"] - target) <= max(1, 0.05 * target)
    assert abs(by["sara_naive"]["trainable"] - target) <= max(1, 0.05 * target)
    assert by["sara"]["dense_grad_bytes_frozen"] > 0
    assert all(r["threads"] == 1 for r in records)
    k = by["sara"]["trainable"]
    assert by["sara"]["floor_bytes"] == by["floor"]["peak_bytes"] + 4 * 4 * k + 4 * k
    assert png.stat().st_size > 0
    lines = [ln for ln in capsys.readouterr().out.strip().splitlines() if ln.strip()]
    assert all(ln.split()[0] in ("PASS", "MISS", "N/A") for ln in lines[-4:])
    assert any("peak/floor" in ln for ln in lines)
    crossover = [ln for ln in lines if ln.startswith("weight-gradient crossover on cpu")]
    assert len(crossover) == 1 and "sampled path wins below density" in crossover[0]
    assert json.loads((tmp_path / "records_crossover.json").read_text())["layers"]


@pytest.mark.slow
def test_end_to_end_tiny_unet_cpu(tmp_path):
    """Two methods x one batch size on a tiny UNet, each in its own subprocess as in a real run
    (slow: every child imports torch, diffusers and peft): valid records, a plot, ratios last."""
    pytest.importorskip("diffusers")
    cfg = tmp_path / "tiny_unet.json"
    cfg.write_text(json.dumps(TINY_UNET))
    out, png = tmp_path / "records.json", tmp_path / "fig5.png"
    cmd = [sys.executable, str(SCRIPT), "--arch", str(cfg), "--device", "cpu", "--resolution", "64",
           "--batch-sizes", "2", "--budget", "50M", "--methods", "sara,lora_dropout", "--references", "floor",
           "--steps", "1", "--warmup", "1", "--json", str(out), "--plot", str(png)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=REPO)
    assert proc.returncode == 0, proc.stderr[-2000:]
    records = json.loads(out.read_text())
    by = _check_records(records, ("floor", "sara", "lora_dropout"), 2, 64)
    target = ms.scaled_target("50M", records[0]["n_params"])
    assert by["sara"]["budget"] == target
    assert abs(by["sara"]["trainable"] - target) <= max(1, 0.05 * target)
    assert by["sara"]["dense_grad_bytes_frozen"] > 0
    assert by["sara"]["floor_bytes"] == by["floor"]["peak_bytes"] + 4 * 4 * by["sara"]["trainable"] + 4 * by["sara"]["trainable"]
    assert png.stat().st_size > 0
    lines = [ln for ln in proc.stdout.strip().splitlines() if ln.strip()]
    assert all(ln.split()[0] in ("PASS", "MISS", "N/A") for ln in lines[-4:])
    assert any("peak/floor" in ln for ln in lines)
