import numpy as np
import pytest

from sara.data.procedural import (
    COLOUR_NAMES, GAP, MARGIN, RELATIONS, SHAPES, Scene, caption, parse_caption, relation_holds,
    render, sample_scene, scene_rng,
)


def _scenes(n, seed=0, stream=3):
    return [sample_scene(scene_rng(seed, stream, i)) for i in range(n)]


def test_sampling_and_render_are_deterministic():
    a = [render(s, 32) for s in _scenes(20)]
    b = [render(s, 32) for s in _scenes(20)]
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    c = [render(s, 32) for s in _scenes(20, seed=1)]
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))


def test_render_format():
    s = _scenes(1)[0]
    for size in (32, 64):
        im = render(s, size)
        assert im.dtype == np.uint8 and im.shape == (size, size, 3)
    # the corners are background
    im = render(s, 32)
    assert np.abs(im[0, 0].astype(int) - np.array(s.background)).max() <= 1


def test_scene_geometry():
    for s in _scenes(400):
        assert 1 <= len(s.objects) <= 3
        for o in s.objects:
            x0, y0, x1, y1 = o.box
            assert min(x0, y0) >= MARGIN - 1e-9 and max(x1, y1) <= 1 - MARGIN + 1e-9
        for i, a in enumerate(s.objects):
            for b in s.objects[i + 1:]:
                ax0, ay0, ax1, ay1 = a.box
                bx0, by0, bx1, by1 = b.box
                apart = ax1 + GAP <= bx0 + 1e-9 or bx1 + GAP <= ax0 + 1e-9 or ay1 + GAP <= by0 + 1e-9 or by1 + GAP <= ay0 + 1e-9
                assert apart
        if len(s.objects) >= 2:
            i, rel, j = s.relation
            assert rel in RELATIONS and relation_holds(s.objects[i], s.objects[j], rel)
        else:
            assert s.relation is None


def test_all_attributes_occur():
    scenes = _scenes(600)
    objs = [o for s in scenes for o in s.objects]
    assert {o.shape for o in objs} == set(SHAPES)
    assert {o.colour for o in objs} == set(COLOUR_NAMES)
    assert {o.size for o in objs} == {"small", "large"}
    assert {s.relation[1] for s in scenes if s.relation} == set(RELATIONS)
    assert {len(s.objects) for s in scenes} == {1, 2, 3}


def test_caption_round_trip():
    for s in _scenes(300):
        assert parse_caption(caption(s)) == s.attributes()
        assert parse_caption("Hornify style, " + caption(s)) == s.attributes()


def test_caption_examples():
    assert parse_caption("a large green triangle") == [
        {"shape": "triangle", "colour": "green", "size": "large", "relation": None}]
    p = parse_caption("BarbieCore style, a small red circle above a blue square.")
    assert p[0]["relation"] == {"relation": "above", "target": 1}
    assert p[1] == {"shape": "square", "colour": "blue", "size": None, "relation": None}
    p = parse_caption("a small red circle left of a large blue square and a small yellow cross")
    assert [o["shape"] for o in p] == ["circle", "square", "cross"]
    with pytest.raises(ValueError, match="not a caption"):
        parse_caption("a photo of a dog")


def test_scene_dict_round_trip():
    for s in _scenes(20):
        d = s.to_dict()
        assert Scene.from_dict(d) == s


def test_exclude_and_include_pairs():
    excl = [(c, "circle") for c in COLOUR_NAMES]
    for i in range(100):
        s = sample_scene(scene_rng(0, 9, i), exclude_pairs=excl)
        assert all(o.shape != "circle" for o in s.objects)
        s = sample_scene(scene_rng(0, 9, i), include_pairs=[("red", "cross")])
        assert ("red", "cross") in s.pairs()
