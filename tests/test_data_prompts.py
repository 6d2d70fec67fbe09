from sara.data.__main__ import main
from sara.data.procedural import COLOUR_NAMES, SHAPES, parse_caption
from sara.data.prompts import HELD_OUT_PAIRS, eval_prompts, eval_scenes
from sara.data.styles import STYLE_NAMES, style_scenes


def test_held_out_pairs_cover_every_colour_and_shape():
    assert {c for c, _ in HELD_OUT_PAIRS} == set(COLOUR_NAMES)
    assert {s for _, s in HELD_OUT_PAIRS} == set(SHAPES)


def test_eval_prompts():
    p = eval_prompts(seed=0)
    assert len(p) == 500 and len(set(p)) == 500
    assert p == eval_prompts(seed=0)
    assert p != eval_prompts(seed=1)
    for text in p:
        objs = parse_caption(text)
        assert any((o["colour"], o["shape"]) in HELD_OUT_PAIRS for o in objs), text
    assert [len(s.objects) for s in eval_scenes(0)[:50]] != [1] * 50


def test_no_style_dataset_contains_a_held_out_pair():
    held = set(HELD_OUT_PAIRS)
    seen = set()
    for name in STYLE_NAMES:
        for s in style_scenes(name, seed=0):
            pairs = set(s.pairs())
            assert not pairs & held, (name, s)
            seen |= pairs
    # everything else does occur
    assert seen == {(c, s) for c in COLOUR_NAMES for s in SHAPES} - held


def test_cli_writes_folders_and_prompts(tmp_path, monkeypatch):
    from sara.data.styles import STYLE_SIZES

    for name in STYLE_NAMES:  # keep the test fast: the real counts are tested in test_data_styles
        monkeypatch.setitem(STYLE_SIZES, name, 3)
    assert main(["--out", str(tmp_path), "--seed", "0", "--no-progress"]) == 0
    lines = (tmp_path / "eval_prompts.txt").read_text().splitlines()
    assert lines == eval_prompts(0)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*STYLE_NAMES, "eval_prompts.txt"])
    for name in STYLE_NAMES:
        assert len(list((tmp_path / name).glob("*.png"))) == 3
    assert main(["--out", str(tmp_path), "--missing-only", "--no-progress"]) == 0


def test_validation_prompts_are_disjoint_from_every_test_prompt_and_deterministic():
    from sara.data.prompts import N_EVAL_PROMPTS, is_held_out, validation_prompts
    from sara.data.procedural import parse_caption

    val = validation_prompts(seed=0)
    assert len(val) == len(set(val)) == 100
    assert not set(val) & set(eval_prompts(seed=0, n=N_EVAL_PROMPTS))
    assert val == validation_prompts(seed=0)
    assert validation_prompts(seed=0, n=10) == val[:10]
    for p in val[:20]:   # drawn like the test prompts: every prompt has a held-out pair
        assert any(is_held_out(o["colour"], o["shape"]) for o in parse_caption(p))


def test_eval_prompt_list_reads_the_named_prompt_set():
    import pytest

    from sara.data.build import eval_prompt_list
    from sara.data.prompts import validation_prompts

    assert eval_prompt_list({"num_prompts": 3}) == eval_prompts(seed=0)[:3]
    assert eval_prompt_list({"num_prompts": 3, "prompt_set": "validation"}) == validation_prompts(seed=0)[:3]
    with pytest.raises(ValueError, match="eval.prompt_set: expected 'test' or 'validation', got 'dev'"):
        eval_prompt_list({"num_prompts": 3, "prompt_set": "dev"})
