"""FID: the suite's path equals clean-fid's own compute_fid with the same extractor; caching."""
import os

import numpy as np
import pytest
import torch
from PIL import Image

from sara.metrics import fid as F
from sara.metrics.frechet import fid_from_features, frechet_distance
from sara.metrics.weights import MissingWeightsError


class _TinyNet(torch.nn.Module):
    def __init__(self, d=6):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.conv = torch.nn.Conv2d(3, d, 3, padding=1)
        with torch.no_grad():
            for p in self.conv.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x):  # x in [0, 255]
        return torch.tanh(self.conv(x / 127.5 - 1)).mean(dim=(2, 3)) * 10


def _extractor():
    return F.FeatureExtractor(_TinyNet(), "tiny-test", "fingerprint-0", fn_resize=F._clean_resizer(16))


def _write(d, n, size, seed, shift=0):
    os.makedirs(d, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        a = np.clip(rng.normal(128 + shift, 60, (size, size, 3)), 0, 255).astype(np.uint8)
        Image.fromarray(a).save(os.path.join(d, f"{i:05d}.png"))


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("fid")
    a, b = str(root / "gen"), str(root / "ref")
    _write(a, 24, 32, 0)
    _write(b, 20, 64, 1, shift=30)
    with open(os.path.join(b, "metadata.jsonl"), "w") as f:  # not an image: ignored
        f.write('{"file_name": "00000.png", "text": "x"}\n')
    return a, b


def test_equals_cleanfid_compute_fid(folders, tmp_path):
    from cleanfid import fid as cfid

    gen, ref = folders
    ext = _extractor()
    theirs = cfid.compute_fid(
        gen, ref, mode="clean", custom_feat_extractor=ext, custom_fn_resize=ext.fn_resize,
        device=torch.device("cpu"), num_workers=0, batch_size=8, verbose=False, use_dataparallel=False,
    )
    ours = F.compute_fid(gen, ref, extractor=ext, device="cpu", cache=tmp_path)
    assert theirs > 1.0  # the two sets differ
    assert abs(ours - theirs) <= 1e-6, (ours, theirs)
    # the cached reference statistics give the same number
    again, info = F.compute_fid(gen, ref, extractor=ext, device="cpu", cache=tmp_path, return_info=True)
    assert info["cache_hit"] and abs(again - theirs) <= 1e-6
    assert info["n_images"] == 20 and info["n_generated"] == 24


def test_frechet_matches_cleanfid_maths():
    from cleanfid.fid import frechet_distance as theirs

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(50, 5)), rng.normal(0.3, 1.4, size=(40, 5))
    mu1, s1, mu2, s2 = a.mean(0), np.cov(a, rowvar=False), b.mean(0), np.cov(b, rowvar=False)
    assert abs(frechet_distance(mu1, s1, mu2, s2) - theirs(mu1, s1, mu2, s2)) < 1e-9
    assert abs(fid_from_features(a, a)) < 1e-6
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_features(a[:1], b)


def test_cache_key_changes_with_files_and_extractor(folders, tmp_path):
    gen, ref = folders
    ext = _extractor()
    _, _, i1 = F.reference_stats(ref, ext, cache=tmp_path)
    ext2 = _extractor()
    ext2.fingerprint = "other-weights"
    _, _, i2 = F.reference_stats(ref, ext2, cache=tmp_path)
    assert not i2["cache_hit"] and i1["cache"] != i2["cache"]
    assert len(list(tmp_path.glob("*.npz"))) == 2 and not list(tmp_path.glob("*.tmp"))
    _, _, i3 = F.reference_stats(gen, ext, cache=tmp_path)
    assert i3["files_sha256"] != i1["files_sha256"]


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        F.list_images(tmp_path / "nope")
    _write(str(tmp_path / "one"), 1, 8, 0)
    with pytest.raises(ValueError, match="at least 2"):
        F.folder_features(tmp_path / "one", _extractor())


def test_inception_missing_weights_message(tmp_path, monkeypatch):
    monkeypatch.setenv("SARA_WEIGHTS_DIR", str(tmp_path / "w"))
    monkeypatch.delenv("SARA_INCEPTION_PATH", raising=False)
    if os.path.exists("/tmp/inception-2015-12-05.pt"):
        pytest.skip("clean-fid's Inception weights are present on this machine")
    with pytest.raises(MissingWeightsError) as e:
        F.inception_extractor("cpu")
    msg = str(e.value)
    assert "inception-2015-12-05.pt" in msg and "SARA_INCEPTION_PATH" in msg and "eval.fid.weights" in msg
    assert str(tmp_path / "w") in msg
