import json
import re

import numpy as np
import pytest
import torch
from PIL import Image

from sara.data.folder import DatasetError, ImageCaptionFolder


def _write(root, entries, images=None):
    root.mkdir(parents=True, exist_ok=True)
    lines = [e if isinstance(e, str) else json.dumps(e) for e in entries]
    (root / "metadata.jsonl").write_text("\n".join(lines) + ("\n" if lines else ""))
    for fn, img in (images or {}).items():
        img.save(root / fn)
    return root


def _img(w=40, h=40, mode="RGB", colour=(200, 30, 30)):
    return Image.new(mode, (w, h), colour if mode == "RGB" else None) if mode == "RGB" else Image.new(mode, (w, h))


def test_loads_any_size_and_mode(tmp_path):
    rgba = Image.new("RGBA", (30, 50), (0, 0, 255, 0))  # fully transparent: white after loading
    imgs = {"a.png": Image.new("RGB", (80, 50), (200, 30, 30)), "b.png": Image.new("L", (17, 33), 90),
            "c.png": rgba, "d.jpg": Image.new("RGB", (64, 64), (10, 200, 10)),
            "e.png": Image.new("P", (20, 20))}
    entries = [{"file_name": fn, "text": f"image {fn}", "extra": 1} for fn in imgs]
    root = _write(tmp_path / "set", entries[:2] + [""] + entries[2:], imgs)  # a blank line is skipped
    ds = ImageCaptionFolder(root, 32, caption_prefix="Hornify style, ")
    assert len(ds) == 5
    for i in range(5):
        it = ds[i]
        assert it["pixel_values"].shape == (3, 32, 32) and it["pixel_values"].dtype == torch.float32
        assert -1 <= it["pixel_values"].min() and it["pixel_values"].max() <= 1
        assert it["prompt"].startswith("Hornify style, image ")
    assert torch.allclose(ds[2]["pixel_values"], torch.ones(3, 32, 32))  # transparent -> white
    assert np.abs(ds.image(0).astype(int) - [200, 30, 30]).max() <= 1


def test_center_crop(tmp_path):
    im = np.zeros((40, 80, 3), np.uint8)
    im[:, :20] = 255  # left quarter white: cropped away by a center crop
    root = _write(tmp_path / "s", [{"file_name": "x.png", "text": "t"}], {"x.png": Image.fromarray(im)})
    assert ImageCaptionFolder(root, 20).image(0).max() == 0
    assert ImageCaptionFolder(root, 20, center_crop=False).image(0)[:, 0].min() == 255


def _err(root, pattern):
    with pytest.raises(DatasetError) as e:
        ImageCaptionFolder(root, 32)
    msg = str(e.value)
    assert re.search(pattern, msg), msg
    return msg


def test_missing_folder(tmp_path):
    msg = _err(tmp_path / "nope", r"dataset folder not found")
    assert str(tmp_path / "nope") in msg


def test_missing_metadata(tmp_path):
    (tmp_path / "s").mkdir()
    msg = _err(tmp_path / "s", r"missing metadata\.jsonl")
    assert str(tmp_path / "s" / "metadata.jsonl") in msg


def test_empty_metadata(tmp_path):
    root = _write(tmp_path / "s", [])
    msg = _err(root, r"empty metadata file")
    assert str(root / "metadata.jsonl") in msg
    (root / "metadata.jsonl").write_text("\n  \n")
    _err(root, r"empty metadata file")


def test_line_not_json(tmp_path):
    root = _write(tmp_path / "s", [{"file_name": "a.png", "text": "t"}, "{not json"], {"a.png": _img()})
    msg = _err(root, r"line 2: not valid JSON")
    assert str(root / "metadata.jsonl") in msg


def test_line_without_text(tmp_path):
    root = _write(tmp_path / "s", [{"file_name": "a.png", "text": "t"}, {"file_name": "a.png"}], {"a.png": _img()})
    _err(root, r"line 2: missing key 'text'")


def test_line_without_file_name(tmp_path):
    root = _write(tmp_path / "s", [{"text": "t"}])
    _err(root, r"line 1: missing key 'file_name'")


def test_line_not_an_object_or_text_not_string(tmp_path):
    root = _write(tmp_path / "s", ["[1, 2]"])
    _err(root, r"line 1: expected a JSON object")
    root = _write(tmp_path / "t", [{"file_name": "a.png", "text": 3}], {"a.png": _img()})
    _err(root, r"line 1: key 'text' must be a string")


def test_listed_file_absent(tmp_path):
    root = _write(tmp_path / "s", [{"file_name": "a.png", "text": "t"}, {"file_name": "gone.png", "text": "t"}],
                  {"a.png": _img()})
    msg = _err(root, r"line 2: listed file 'gone\.png' not found")
    assert str(root / "gone.png") in msg


def test_listed_file_not_an_image(tmp_path):
    root = _write(tmp_path / "s", [{"file_name": "bad.png", "text": "t"}])
    (root / "bad.png").write_bytes(b"this is not a png")
    msg = _err(root, r"is not a readable image")
    assert str(root / "bad.png") in msg and "line 1" in msg
    # a truncated PNG is caught too
    good = tmp_path / "g.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(good)
    (root / "bad.png").write_bytes(good.read_bytes()[:200])
    _err(root, r"bad\.png.*not a readable image")
