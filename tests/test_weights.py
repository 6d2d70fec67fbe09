"""Every training run writes its weights in the ecosystem's format next to result.json, they load
back onto the base model to exactly the sampled weights, and loading never runs code from a file
(a crafted pickle in checkpoint/state.pt is refused, naming the file and the fix)."""
from __future__ import annotations

import json
import pickle

import pytest
import torch

from conftest import StubBackbone, compose_conf
from sara.record import run_dir_for
from sara.runs import execute

STUB = ["backbone=stub", "data=stub", "train=smoke", "eval=smoke", "eval.metrics=[]",
        "train.lr=0.01", "hydra/job_logging=disabled"]


compose = compose_conf


def run(conf, overrides, out):
    cfg = compose(conf, STUB + [f"output_root={out}"] + overrides)
    d = run_dir_for(cfg)
    return execute(cfg, d), d


@pytest.mark.parametrize("method,name", [("sara", "delta.safetensors"),
                                         ("lt_sft_dense", "delta.safetensors"),
                                         ("lora", "adapter"), ("dora", "adapter"),
                                         ("shira", "adapter"), ("super_tuning", "adapter"),
                                         ("full", "denoiser"),
                                         ("adaptformer", "adaptformer.safetensors")])
def test_run_writes_weights_that_load_back_exactly(stub_conf, stub_world, tmp_path, sampled,
                                                   method, name):
    from sara.weights import trained_denoiser

    extra = ["method.phase1_steps=2"] if method.startswith("lt_sft") else []
    rec, d = run(stub_conf, [f"method={method}", "budget=50M"] + extra, tmp_path / "runs")
    assert rec["paths"]["weights"] == str(d / name) and (d / name).exists()
    base = StubBackbone().denoiser.state_dict()
    # trained: a base weight moved, or (AdaptFormer) a zero-initialised up-projection did
    assert any(not torch.equal(v, base[k]) if k in base else
               (k.endswith("up.weight") and bool(v.abs().sum() > 0)) for k, v in sampled[0].items())
    module, _ = trained_denoiser(d, StubBackbone().denoiser)
    got = module.state_dict()
    if method == "adaptformer":  # not mergeable: the adapter modules are part of the module
        assert set(sampled[0]) == set(got)
    for k, v in sampled[0].items():
        assert torch.equal(got[k], v), k
    if name == "delta.safetensors":  # the library API reads it onto a plain base model
        import sara

        plain = StubBackbone().denoiser
        sara.load_sparse(plain, d / name)
        for k, v in plain.state_dict().items():
            assert torch.equal(v, sampled[0][k]), k


def test_lora_adapter_is_a_peft_folder(stub_conf, stub_world, tmp_path, sampled):
    from peft import PeftModel

    _, d = run(stub_conf, ["method=lora", "budget=50M"], tmp_path / "runs")
    cfg = json.loads((d / "adapter/adapter_config.json").read_text())
    assert cfg["peft_type"] == "LORA" and (d / "adapter/adapter_model.safetensors").is_file()
    model = PeftModel.from_pretrained(StubBackbone().denoiser, str(d / "adapter"))
    merged = model.merge_and_unload()
    for k, v in sampled[0].items():
        torch.testing.assert_close(merged.state_dict()[k], v, rtol=0, atol=1e-6)


class _Evil:
    def __reduce__(self):
        import os

        return (os.system, ("touch PWNED_BY_PICKLE",))


def test_crafted_pickle_is_refused(tmp_path, monkeypatch):
    from sara.weights import CorruptCheckpointError, load_checkpoint_file

    monkeypatch.chdir(tmp_path)
    p = tmp_path / "state.pt"
    p.write_bytes(pickle.dumps({"format": "sara-train-checkpoint", "x": _Evil()}))
    with pytest.raises(CorruptCheckpointError) as ei:
        load_checkpoint_file(p)
    assert not (tmp_path / "PWNED_BY_PICKLE").exists()
    msg = str(ei.value)
    assert str(p) in msg and "train.resume=false" in msg and "overwrite=true" in msg


def test_resume_from_a_corrupt_checkpoint_names_file_and_fix(stub_conf, stub_world, tmp_path):
    cfg = compose(stub_conf, STUB + [f"output_root={tmp_path}/runs"])
    d = run_dir_for(cfg)
    (d / "checkpoint").mkdir(parents=True)
    (d / "checkpoint/state.pt").write_bytes(b"\x80\x04garbage")
    from sara.weights import CorruptCheckpointError

    with pytest.raises(CorruptCheckpointError) as ei:
        execute(cfg, d)
    msg = str(ei.value)
    assert "checkpoint/state.pt" in msg and "train.resume=false" in msg
    # the fix works
    rec = execute(compose(stub_conf, STUB + [f"output_root={tmp_path}/runs", "train.resume=false"]), d)
    assert rec["status"] == "complete"


def test_training_checkpoint_loads_with_weights_only(stub_conf, stub_world, tmp_path):
    """What the trainer writes (method state, optimizer, scheduler, RNG states) is plain data."""
    _, d = run(stub_conf, ["method=sara", "budget=50M", "train.keep_optimizer_state=true"],
               tmp_path / "runs")
    st = torch.load(d / "checkpoint/state.pt", weights_only=True)
    assert st["step"] == 4 and st["optimizer"] is not None


def test_backfill_writes_the_weights_of_an_older_run(stub_conf, stub_world, tmp_path, sampled):
    """A run made before runs wrote weights (only checkpoint/state.pt, numpy RNG state as an
    array): ``python -m sara.weights RUN_DIR`` writes delta.safetensors from the checkpoint."""
    import io

    import numpy as np

    import sara
    from sara.weights import main

    _, d = run(stub_conf, ["method=sara", "budget=50M"], tmp_path / "runs")
    ck = torch.load(d / "checkpoint/state.pt", weights_only=True)
    ck["rng"]["numpy"] = np.random.get_state()  # the older layout
    buf = io.BytesIO()
    torch.save(ck, buf)
    (d / "checkpoint/state.pt").write_bytes(buf.getvalue())
    (d / "delta.safetensors").unlink()
    assert main([str(d)]) == 0
    plain = StubBackbone().denoiser
    sara.load_sparse(plain, d / "delta.safetensors")
    for k, v in plain.state_dict().items():
        assert torch.equal(v, sampled[0][k]), k
