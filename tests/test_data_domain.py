import torch

from sara.data import collate
from sara.data.domain import PretrainDomain, to_uint8_image
from sara.data.procedural import parse_caption, render, Scene


def test_items_are_pure_functions_of_seed_split_index():
    a, b = PretrainDomain(32, "train", seed=0), PretrainDomain(32, "train", seed=0)
    for i in (0, 5, 123456):
        x, y = a[i], b[i]
        assert torch.equal(x["pixel_values"], y["pixel_values"]) and x["prompt"] == y["prompt"]
    # order does not matter
    assert torch.equal(a[7]["pixel_values"], PretrainDomain(32, "train", seed=0)[7]["pixel_values"])
    other = PretrainDomain(32, "train", seed=1)
    assert not torch.equal(a[0]["pixel_values"], other[0]["pixel_values"])


def test_val_is_fixed_and_disjoint_from_train():
    tr, va = PretrainDomain(32, "train"), PretrainDomain(32, "val")
    assert len(va) == 1000 and len(tr) >= 1_000_000
    train_imgs = {tr[i]["pixel_values"].numpy().tobytes() for i in range(200)}
    assert not any(va[i]["pixel_values"].numpy().tobytes() in train_imgs for i in range(200))


def test_item_format():
    d = PretrainDomain(resolution=32, split="val")
    it = d[3]
    x = it["pixel_values"]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    scene = Scene.from_dict(it["scene"])
    assert parse_caption(it["prompt"]) == scene.attributes()
    assert (to_uint8_image(x) == render(scene, 32)).all()
    assert PretrainDomain(resolution=16)[0]["pixel_values"].shape == (3, 16, 16)


def test_collate_and_dataloader():
    d = PretrainDomain(32, "val")
    batch = collate([d[i] for i in range(4)])
    assert set(batch) == {"pixel_values", "prompts"}
    assert batch["pixel_values"].shape == (4, 3, 32, 32) and len(batch["prompts"]) == 4
    assert len(collate([d[0]], keep_scenes=True)["scenes"]) == 1
    dl = torch.utils.data.DataLoader(d, batch_size=8, collate_fn=collate)
    b = next(iter(dl))
    assert b["pixel_values"].shape == (8, 3, 32, 32) and b["prompts"][0] == d[0]["prompt"]


def test_varied_looks_keep_the_content_and_are_deterministic():
    import json

    import numpy as np
    import pytest

    from sara.data.looks import sample_look

    plain, varied = PretrainDomain(32, "train", looks="plain"), PretrainDomain(32, "train", looks="varied")
    keys = None
    kinds = set()
    for i in range(60):
        # same scene and caption in both domains: the look never changes the content
        assert varied[i]["prompt"] == plain[i]["prompt"] and varied[i]["scene"] == plain[i]["scene"]
        look = varied.look(i)
        json.dumps(look)  # recorded looks are plain data
        keys = keys or set(look)
        assert set(look) == keys
        kinds.add(look["background"])
        x = varied[i]["pixel_values"]
        assert x.shape == (3, 32, 32) and x.min() >= -1 and x.max() <= 1
        assert torch.equal(x, PretrainDomain(32, "train", looks="varied")[i]["pixel_values"])
    assert kinds == {"plain", "solid", "gradient", "texture", "horizon"}
    # a look changes the pixels of most items (dark backgrounds among them), a plain look none
    differ = [not torch.equal(varied[i]["pixel_values"], plain[i]["pixel_values"]) for i in range(60)]
    assert sum(differ) >= 30
    means = [float(varied[i]["pixel_values"].mean()) for i in range(60)]
    assert min(means) < -0.5 < max(means)
    assert plain.look(0) is None and sample_look(np.random.default_rng(3)) == sample_look(np.random.default_rng(3))
    with pytest.raises(ValueError, match="looks must be one of"):
        PretrainDomain(32, looks="noir")
