"""A small real ``CLIPTokenizer`` (byte-level BPE, vocab.json + merges.txt) for the tiny backbone.

Every word of a given domain vocabulary becomes one token (merges build each word left to right);
any other word falls back to byte-level characters, as the real CLIP tokenizer does for rare
strings. The result is an ordinary ``transformers.CLIPTokenizer`` that ``save_pretrained`` /
``from_pretrained`` round-trip, so the tiny backbone loads through the same code as Stable Diffusion.
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def _word_symbols(word: str) -> list[str]:
    b2u = bytes_to_unicode()
    chars = [b2u[b] for b in word.encode("utf-8")]
    chars[-1] = chars[-1] + "</w>"
    return chars


def build_vocab_and_merges(words) -> tuple[dict[str, int], list[str]]:
    """Base byte vocabulary (each byte alone and word-final) + left-to-right merges per word.

    Conflicts (a merge learnt for one word firing inside another) are repaired by appending
    merges of the pieces actually produced; appended merges have the lowest priority, so they
    never change how an already single-token word is split."""
    b2u = bytes_to_unicode()
    vocab: dict[str, int] = {}
    for u in b2u.values():
        vocab.setdefault(u, len(vocab))
    for u in b2u.values():
        vocab.setdefault(u + "</w>", len(vocab))
    merges: list[tuple[str, str]] = []
    seen = set()

    def add(a, b):
        if (a, b) not in seen:
            seen.add((a, b))
            merges.append((a, b))
            vocab.setdefault(a + b, len(vocab))

    words = sorted({w.lower() for w in words if w})
    for w in words:
        syms = _word_symbols(w)
        cur = syms[0]
        for s in syms[1:]:
            add(cur, s)
            cur = cur + s
    for _ in range(50):  # repair rounds
        bad = 0
        ranks = {m: i for i, m in enumerate(merges)}
        for w in words:
            pieces = _bpe(_word_symbols(w), ranks)
            if len(pieces) > 1:
                bad += 1
                cur = pieces[0]
                for p in pieces[1:]:
                    add(cur, p)
                    cur = cur + p
        if not bad:
            break
    else:  # pragma: no cover
        raise RuntimeError("could not make every domain word a single token")
    vocab.setdefault(BOS, len(vocab))
    vocab.setdefault(EOS, len(vocab))
    return vocab, [f"{a} {b}" for a, b in merges]


def _bpe(symbols: list[str], ranks: dict) -> list[str]:
    symbols = list(symbols)
    while len(symbols) > 1:
        best, best_i = None, -1
        for i in range(len(symbols) - 1):
            r = ranks.get((symbols[i], symbols[i + 1]))
            if r is not None and (best is None or r < best):
                best, best_i = r, i
        if best is None:
            break
        symbols[best_i:best_i + 2] = [symbols[best_i] + symbols[best_i + 1]]
    return symbols


def build_clip_tokenizer(words, model_max_length: int = 32):
    """A ``CLIPTokenizer`` whose vocab makes every word in ``words`` (and punctuation) one token."""
    from transformers import CLIPTokenizer

    vocab, merges = build_vocab_and_merges(words)
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        (Path(d) / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n")
        tok = CLIPTokenizer(vocab_file=os.path.join(d, "vocab.json"), merges_file=os.path.join(d, "merges.txt"),
                            vocab=vocab, merges=[tuple(m.split(" ")) for m in merges],
                            model_max_length=model_max_length)
    return tok
