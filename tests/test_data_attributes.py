import numpy as np

from sara.data.attributes import check_prompt, detect_objects
from sara.data.procedural import caption, render, sample_scene, scene_rng


def test_detector_accuracy_on_clean_val_renders():
    n, colour, shape, size = 300, 0, 0, 0
    for i in range(n):
        s = sample_scene(scene_rng(0, 1, i))  # the val stream of PretrainDomain
        r = check_prompt(render(s, 32), caption(s))
        colour += r["colour_ok"]
        shape += r["shape_ok"]
        size += r["size_ok"]
    assert colour / n >= 0.97
    assert shape / n >= 0.90
    assert size / n >= 0.90


def test_detector_finds_the_objects():
    s = sample_scene(scene_rng(0, 1, 0), n_objects=3)
    det = detect_objects(render(s, 32))
    assert sorted((d["colour"], d["shape"]) for d in det) == sorted(s.pairs())
    for d in det:
        assert set(d) >= {"colour", "shape", "bbox", "area"}
        assert d["area"] > 10


def test_check_prompt_rejects_wrong_attributes():
    s = sample_scene(scene_rng(0, 1, 1), n_objects=1)
    o = s.objects[0]
    img = render(s, 32)
    other_colour = "blue" if o.colour != "blue" else "red"
    other_shape = "circle" if o.shape != "circle" else "square"
    r = check_prompt(img, f"a {o.size} {other_colour} {o.shape}")
    assert not r["colour_ok"] and not r["shape_ok"]
    r = check_prompt(img, f"a {o.size} {o.colour} {other_shape}")
    assert r["colour_ok"] and not r["shape_ok"]
    r = check_prompt(img, caption(s))
    assert r["colour_ok"] and r["shape_ok"] and r["size_ok"] and r["count_ok"]


def test_blank_image_has_no_objects():
    img = np.full((32, 32, 3), 240, np.uint8)
    assert detect_objects(img) == []
    r = check_prompt(img, "a small red circle")
    assert not r["colour_ok"] and r["colour_acc"] == 0
