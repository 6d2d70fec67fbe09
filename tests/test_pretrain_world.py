"""Pre-training scripts of the latent world at smoke scale: the VAE script writes a diffusers
AutoencoderKL with its manifest and resumes bit-exactly; the UNet script builds the latent
pipeline on it and resumes bit-exactly; the measurement scripts' argument handling."""
import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

VAE_ARGS = ["--steps", "3", "--batch-size", "2", "--warmup", "1", "--workers", "0", "--n-val", "0", "--log-every", "1"]


def _weights(folder: Path, name: str) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / name))


@pytest.fixture(scope="module")
def vae_runs(tmp_path_factory):
    import pretrain_vae

    root = tmp_path_factory.mktemp("vae")
    full = pretrain_vae.main([*VAE_ARGS, "--out", str(root / "full")])
    # an interrupted run: 2 of 3 steps (time budget 0 stops after the first), then --resume
    pretrain_vae.main([*VAE_ARGS, "--out", str(root / "part"), "--time-budget", "1e-9"])
    pretrain_vae.main([*VAE_ARGS, "--out", str(root / "part"), "--resume", str(root / "part_ckpt")])
    return root, full


def test_vae_folder_and_manifest(vae_runs):
    from diffusers import AutoencoderKL

    root, manifest = vae_runs
    vae = AutoencoderKL.from_pretrained(root / "full")
    assert vae.config.latent_channels == 4 and vae.config.scaling_factor == manifest["scaling_factor"] > 0
    m = json.loads((root / "full" / "manifest.json").read_text())
    for k in ("command", "seed", "data_seed", "steps", "samples_seen", "wall_time_s", "device", "latent_shape"):
        assert k in m, k
    assert m["steps"] == 3 and m["latent_shape"] == [4, 16, 16]


def test_vae_resume_is_bit_exact(vae_runs):
    root, _ = vae_runs
    a = _weights(root / "full", "diffusion_pytorch_model.safetensors")
    b = _weights(root / "part", "diffusion_pytorch_model.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_vae_data_is_deterministic():
    import numpy as np
    import pretrain_vae

    for i in range(6):
        k1, x1 = pretrain_vae.vae_item(i, seed=3)
        k2, x2 = pretrain_vae.vae_item(i, seed=3)
        assert k1 == k2 == pretrain_vae.KINDS[i] and np.array_equal(x1, x2) and x1.shape == (64, 64, 3)
    with pytest.raises(ValueError, match="--factor must be 4"):
        pretrain_vae.vae_arch(2)


@pytest.mark.slow
def test_latent_unet_pretraining_resumes_bit_exactly(vae_runs, tmp_path):
    import pretrain_tiny

    root, _ = vae_runs
    args = ["--world", "tiny_latent", "--vae", str(root / "full"), "--steps", "3", "--batch-size", "2", "--warmup", "1",
            "--workers", "0", "--no-progress"]
    pretrain_tiny.main([*args, "--out", str(tmp_path / "a"), "--ckpt", str(tmp_path / "a_ck")])
    assert pretrain_tiny.main([*args, "--out", str(tmp_path / "b"), "--ckpt", str(tmp_path / "b_ck"), "--stop-at", "1"]) is None
    m = pretrain_tiny.main([*args, "--out", str(tmp_path / "b"), "--resume", str(tmp_path / "b_ck")])
    assert m["world"] == "tiny_latent" and m["vae"]["steps"] == 3
    for sub in ("unet/diffusion_pytorch_model.safetensors", "text_encoder/model.safetensors"):
        a, b = _weights(tmp_path / "a", sub), _weights(tmp_path / "b", sub)
        assert all(torch.equal(a[k], b[k]) for k in a), sub
    from diffusers import StableDiffusionPipeline

    pipe = StableDiffusionPipeline.from_pretrained(tmp_path / "b")
    assert pipe("a red circle", num_inference_steps=2).images[0].size == (64, 64)


def test_latent_world_needs_a_vae():
    import pretrain_tiny

    with pytest.raises(SystemExit):
        pretrain_tiny.parse_args(["--world", "tiny_latent"])


@pytest.mark.slow
def test_measurement_scripts_smoke(tmp_path):
    """The FID-noise measurement end to end at smoke scale (run.py jobs with train=smoke)."""
    import measure_fid_noise

    extra = ["train=smoke", "torch_threads=1", f"output_root={tmp_path / 'runs'}"]
    res = measure_fid_noise.main(["--datasets", "Cyberpunk", "--counts", "2,4", "--seeds", "0,1",
                                  "--out", str(tmp_path / "noise"), "--extra", *extra])
    cell = res["table"]["Cyberpunk"]["base"]["4"]
    assert len(cell["fids"]) == 2 and cell["std"] >= 0
    assert set(res["std_within_rel_gap"]) == {"2", "4"}


def test_warm_start_on_varied_looks_records_the_chain(tmp_path):
    """``--init`` starts from a zoo folder's weights (step 0 = those weights) and the manifest's
    ``reproduce`` is the whole chain, so it holds after the zoo folder is replaced."""
    import json

    import pretrain_tiny

    zoo = Path(pretrain_tiny.ROOT) / "sara" / "zoo" / "tiny"
    args = ["--init", str(zoo), "--looks", "varied", "--steps", "1", "--batch-size", "2", "--warmup", "1",
            "--workers", "0", "--no-progress", "--lr", "0", "--ema", "0", "--grad-clip", "0",
            "--torch-threads", "1", "--out", str(tmp_path / "w"), "--ckpt", str(tmp_path / "w_ck")]
    m = pretrain_tiny.main(args)
    assert m["looks"] == "varied" and m["init_manifest"] == json.loads((zoo / "manifest.json").read_text())
    *earlier, last = m["reproduce"].split(" && ")
    stage = f"outputs/pretrain/tiny_init{len(m['init_manifest']['reproduce'].split(' && '))}"
    assert " && ".join(earlier) == f"{m['init_manifest']['reproduce']} --out {stage}"
    assert "--looks varied" in last and f"--init {stage}" in last
    sub = "unet/diffusion_pytorch_model.safetensors"
    a, b = _weights(zoo, sub), _weights(tmp_path / "w", sub)  # lr 0: the initial weights, unchanged
    assert all(torch.equal(a[k].float(), b[k].float()) for k in a)
    with pytest.raises(FileNotFoundError, match="expected one .safetensors file"):
        pretrain_tiny.main([*args[:1], str(tmp_path), *args[2:]])
