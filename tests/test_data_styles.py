import hashlib
import json

import numpy as np
import pytest
from PIL import Image

from sara.data.folder import ImageCaptionFolder
from sara.data.procedural import parse_caption, render, sample_scene, scene_rng
from sara.data.styles import (
    MARKER, STYLE_NAMES, STYLE_SIZES, caption_prefix, dataset_status, ensure_style_datasets, style_item,
    style_scene, write_style_datasets,
)


def _digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_sizes_are_the_papers():
    assert STYLE_SIZES == {"BarbieCore": 316, "Cyberpunk": 440, "ElementFire": 156, "Expedition": 396, "Hornify": 236}
    assert STYLE_NAMES == ("BarbieCore", "Cyberpunk", "ElementFire", "Expedition", "Hornify")


def test_partial_write_is_byte_identical_and_well_formed(tmp_path):
    a = write_style_datasets(tmp_path / "a", seed=0, limit=6)
    b = write_style_datasets(tmp_path / "b", seed=0, limit=6)
    for name in STYLE_NAMES:
        da, db = _digest(a[name]), _digest(b[name])
        assert da == db
        assert len([f for f in da if f.endswith(".png")]) == 6
        lines = [json.loads(x) for x in (a[name] / "metadata.jsonl").read_text().splitlines()]
        assert [d["file_name"] for d in lines] == [f"{i:04d}.png" for i in range(6)]
        for i, d in enumerate(lines):
            assert set(d) == {"file_name", "text"}
            assert d["text"] == style_item(name, i, 0)[0]
            parse_caption(d["text"])
            with Image.open(a[name] / d["file_name"]) as im:
                assert im.size == (64, 64) and im.mode == "RGB"
    # no temporary folders left behind
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == sorted(STYLE_NAMES)
    c = write_style_datasets(tmp_path / "c", seed=1, names=["Hornify"], limit=6)
    assert _digest(c["Hornify"]) != _digest(a["Hornify"])


def test_rewrite_same_seed_is_byte_identical(tmp_path):
    d1 = _digest(write_style_datasets(tmp_path, 0, ["ElementFire"])["ElementFire"])
    assert len(d1) == 156 + 2  # images, metadata.jsonl, marker
    d2 = _digest(write_style_datasets(tmp_path, 0, ["ElementFire"])["ElementFire"])
    assert d1 == d2
    ds = ImageCaptionFolder(tmp_path / "ElementFire", 32, caption_prefix=caption_prefix("ElementFire"))
    assert len(ds) == 156 and ds[0]["prompt"].startswith("ElementFire style, a ")


def test_ensure_writes_only_what_is_missing_or_stale(tmp_path, monkeypatch):
    monkeypatch.setitem(STYLE_SIZES, "ElementFire", 12)  # keep the test fast
    write_style_datasets(tmp_path, 0, ["ElementFire"], limit=3)  # incomplete (suite-written)
    assert dataset_status(tmp_path / "ElementFire", "ElementFire") == "stale"
    foreign = tmp_path / "Hornify"
    foreign.mkdir()
    (foreign / "metadata.jsonl").write_text('{"file_name": "x.png", "text": "a real image"}\n')
    with pytest.warns(UserWarning, match="not written by sara.data"):
        ensure_style_datasets(tmp_path, 0, names=["ElementFire", "Hornify"])
    assert dataset_status(tmp_path / "ElementFire", "ElementFire") == "ok"
    assert len(list((tmp_path / "ElementFire").glob("*.png"))) == 12
    assert sorted(p.name for p in foreign.iterdir()) == ["metadata.jsonl"]  # untouched
    before = (tmp_path / "ElementFire" / MARKER).stat().st_mtime_ns
    ensure_style_datasets(tmp_path, 0, names=["ElementFire"])
    assert (tmp_path / "ElementFire" / MARKER).stat().st_mtime_ns == before  # not rewritten
    assert dataset_status(tmp_path / "ElementFire", "ElementFire", seed=1) == "stale"
    (tmp_path / "ElementFire" / "0007.png").unlink()
    assert dataset_status(tmp_path / "ElementFire", "ElementFire") == "stale"


def _hist(img, bins=4):
    q = (img.reshape(-1, 3).astype(int) * bins) // 256
    idx = q[:, 0] * bins * bins + q[:, 1] * bins + q[:, 2]
    return np.bincount(idx, minlength=bins**3) / len(idx)


def test_styles_are_distinguishable_at_model_resolution():
    """Nearest centroid on 64-bin colour histograms of 32x32 images separates base + 5 styles."""
    def images(cls, i):
        if cls == "base":
            return render(sample_scene(scene_rng(0, 1, i)), 32)
        return np.asarray(Image.fromarray(style_item(cls, i, 0)[1]).resize((32, 32), Image.Resampling.BOX))

    classes = ["base", *STYLE_NAMES]
    n_train, n_test = 20, 20
    feats = {c: np.stack([_hist(images(c, i)) for i in range(n_train + n_test)]) for c in classes}
    cents = np.stack([feats[c][:n_train].mean(0) for c in classes])
    correct = total = 0
    for k, c in enumerate(classes):
        for f in feats[c][n_train:]:
            correct += int(np.argmin(((cents - f) ** 2).sum(1)) == k)
            total += 1
    assert correct / total >= 0.9


def test_style_item_caption_is_the_scene_caption():
    from sara.data.procedural import caption
    for name in STYLE_NAMES:
        s = style_scene(name, 3, 0)
        text, img = style_item(name, 3, 0)
        assert text == caption(s) and not text.startswith(name)
        assert img.shape == (64, 64, 3) and img.dtype == np.uint8


@pytest.mark.slow
def test_full_write_has_the_papers_counts(tmp_path):
    out = write_style_datasets(tmp_path, seed=0)
    for name, n in STYLE_SIZES.items():
        assert len(list(out[name].glob("*.png"))) == n
        assert len((out[name] / "metadata.jsonl").read_text().splitlines()) == n
        assert len(ImageCaptionFolder(out[name], 32)) == n
        assert dataset_status(out[name], name) == "ok"


def test_strip_style_prefix():
    from sara.data.styles import caption_prefix, strip_style_prefix

    assert strip_style_prefix(caption_prefix("Cyberpunk") + "a small red circle") == "a small red circle"
    assert strip_style_prefix("BarbieCore style, Hornify style, a red circle and a blue cross") == \
        "a red circle and a blue cross"
    assert strip_style_prefix("  a large green square ") == "a large green square"
