"""The 500 held-out evaluation prompts.

Rule: seven (colour, shape) pairs, one per colour and covering every shape, are *held out*
(:data:`HELD_OUT_PAIRS`). No object of any style dataset has a held-out pair (style scenes are drawn
with ``exclude_pairs=HELD_OUT_PAIRS``), and every evaluation prompt has at least one object with a
held-out pair, so no evaluation prompt's attribute combination was seen during style fine-tuning.
The pre-training domain (:class:`~sara.data.domain.PretrainDomain`) contains all pairs, so the
backbone can draw them; a fine-tuned model must carry the style over to combinations its style
data never showed.

The pairs: colour ``i`` (in :data:`~sara.data.procedural.COLOUR_NAMES` order) gets shape
``(2 i + 1) mod 5`` (in :data:`~sara.data.procedural.SHAPES` order).

Prompts are the plain captions (no style prefix; the sampler adds ``"<Name> style, "``), all
distinct, in a fixed order that is a pure function of the seed.
"""
from __future__ import annotations

from .procedural import COLOUR_NAMES, SHAPES, Scene, caption, sample_scene, scene_rng

HELD_OUT_PAIRS: tuple[tuple[str, str], ...] = tuple(
    (c, SHAPES[(2 * i + 1) % len(SHAPES)]) for i, c in enumerate(COLOUR_NAMES)
)
N_EVAL_PROMPTS = 500
N_VALIDATION_PROMPTS = 100
_EVAL_STREAM = 7
_VALIDATION_STREAM = 8


def is_held_out(colour: str, shape: str) -> bool:
    return (colour, shape) in HELD_OUT_PAIRS


def _held_out_scenes(seed: int, stream: int, n: int, exclude: frozenset[str] = frozenset()) -> list[Scene]:
    scenes, seen, i = [], set(exclude), 0
    while len(scenes) < n:
        s = sample_scene(scene_rng(seed, stream, i), include_pairs=HELD_OUT_PAIRS)
        i += 1
        c = caption(s)
        if c in seen:
            continue
        seen.add(c)
        scenes.append(s)
    return scenes


def eval_scenes(seed: int = 0, n: int = N_EVAL_PROMPTS) -> list[Scene]:
    """``n`` scenes with distinct captions, each with at least one held-out pair."""
    return _held_out_scenes(seed, _EVAL_STREAM, n)


def eval_prompts(seed: int = 0, n: int = N_EVAL_PROMPTS) -> list[str]:
    """The ``n`` (default 500) held-out evaluation prompts."""
    return [caption(s) for s in eval_scenes(seed, n)]


def validation_prompts(seed: int = 0, n: int = N_VALIDATION_PROMPTS) -> list[str]:
    """``n`` prompts drawn like the evaluation prompts (each with a held-out pair) but disjoint from
    all :data:`N_EVAL_PROMPTS` of ``eval_prompts(seed)``: hyper-parameters are tuned on these, so
    the test prompts never choose a setting."""
    test = frozenset(eval_prompts(seed))
    return [caption(s) for s in _held_out_scenes(seed, _VALIDATION_STREAM, n, exclude=test)]
