"""B-VQA (T2I-CompBench, Huang et al. 2023) — attribute binding measured by a VQA model.

For each image and its prompt: split the prompt into noun phrases ("a small red circle",
"a large blue square"), ask the VQA model "``{phrase}?``", take
``P(yes) / (P(yes) + P(no))`` per phrase, multiply over the phrases (the image's score), and
average over images. Table 6 of the paper uses it in place of CLIP in VLHI.

* noun phrases: T2I-CompBench uses spaCy's ``noun_chunks`` (``en_core_web_sm``), dropping
  ``top / the side / the left / the right``. Here: a prompt of the procedural domain is parsed
  exactly (:func:`sara.data.procedural.parse_caption`); other prompts use spaCy when it and its
  model are installed, else a rule-based chunker (split at commas, "and", "with" and spatial
  prepositions). A ``"<Name> style, "`` prefix is dropped first.
* real: transformers ``BlipForQuestionAnswering`` (``Salesforce/blip-vqa-base``; weights located
  by :func:`sara.metrics.weights.resolve_real`, key ``eval.bvqa.weights``, env
  ``SARA_BLIP_VQA_PATH``). P(yes), P(no) are the answer decoder's first-token probabilities of
  "yes" and "no".
* embedded: :class:`sara.metrics.embedded.AttrVQA` — the phrase is parsed into (size, colour,
  shape) and the model's sigmoid is P(yes) / (P(yes) + P(no)).
"""
from __future__ import annotations

import os
import re
from typing import Sequence

import numpy as np
import torch

from sara.data.styles import strip_style_prefix

from .clip_score import load_images
from .weights import resolve_real

__all__ = ["noun_phrases", "BlipVQA", "EmbeddedVQA", "load_vqa", "bvqa", "bvqa_scores"]

_SPLIT = re.compile(
    r"\s*(?:,|;|\band\b|\bwith\b|\babove\b|\bbelow\b|\bunder\b|\bover\b|\bbeside\b|\bbehind\b|\bnear\b|"
    r"\bnext to\b|\bon top of\b|\bin front of\b|\bto the (?:left|right) of\b|\b(?:left|right) of\b|\bon\b|\bin\b)\s*",
    re.IGNORECASE,
)
_SKIP = {"top", "the side", "the left", "the right", ""}
_spacy_nlp = None


def _spacy():
    global _spacy_nlp
    if _spacy_nlp is None:
        try:  # optional: T2I-CompBench's own chunker
            import spacy

            _spacy_nlp = spacy.load("en_core_web_sm")
        except Exception:
            _spacy_nlp = False
    return _spacy_nlp or None


def noun_phrases(prompt: str, use_spacy: bool = True) -> list[str]:
    """The noun phrases of a prompt, each asked as ``"{phrase}?"``."""
    text = strip_style_prefix(prompt).rstrip(".")
    try:
        from sara.data.procedural import parse_caption

        objs = parse_caption(text)
        return [" ".join(["a", *[o[k] for k in ("size", "colour", "shape") if o.get(k)]]) for o in objs]
    except ValueError:
        pass
    nlp = _spacy() if use_spacy else None
    if nlp is not None:
        return [c.text for c in nlp(text).noun_chunks if c.text not in _SKIP]
    return [p.strip() for p in _SPLIT.split(text) if p and p.strip().lower() not in _SKIP]


class BlipVQA:
    """transformers BLIP VQA; ``p_yes(images, questions)`` = P(yes) / (P(yes) + P(no))."""

    def __init__(self, model, processor, device="cpu", source=""):
        self.model = model.to(device).eval()
        self.processor = processor
        self.device = device
        self.source = source
        tok = processor.tokenizer
        self.yes_id = tok.convert_tokens_to_ids("yes")
        self.no_id = tok.convert_tokens_to_ids("no")
        if self.yes_id == tok.unk_token_id or self.no_id == tok.unk_token_id:
            raise ValueError(f"BLIP VQA tokenizer at {source} has no 'yes'/'no' tokens")

    @classmethod
    def from_dir(cls, path, device="cpu") -> "BlipVQA":
        from transformers import BlipForQuestionAnswering, BlipProcessor

        model = BlipForQuestionAnswering.from_pretrained(str(path))
        processor = BlipProcessor.from_pretrained(str(path))
        return cls(model, processor, device, str(path))

    @torch.no_grad()
    def p_yes(self, images, questions: Sequence[str], batch_size: int = 16) -> np.ndarray:
        out = []
        m = self.model
        for i in range(0, len(questions), batch_size):
            ims = load_images(images[i : i + batch_size])
            enc = self.processor(images=ims, text=list(questions[i : i + batch_size]), return_tensors="pt", padding=True)
            enc = {k: v.to(self.device) for k, v in enc.items()}
            img = m.vision_model(pixel_values=enc["pixel_values"])[0]
            img_mask = torch.ones(img.shape[:-1], dtype=torch.long, device=img.device)
            q = m.text_encoder(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"],
                               encoder_hidden_states=img, encoder_attention_mask=img_mask, return_dict=False)[0]
            bos = torch.full((q.shape[0], 1), m.decoder_start_token_id, dtype=torch.long, device=q.device)
            logits = m.text_decoder(input_ids=bos, encoder_hidden_states=q,
                                    encoder_attention_mask=enc["attention_mask"], return_dict=True).logits[:, -1, :]
            p = torch.softmax(logits.float(), -1)
            py, pn = p[:, self.yes_id], p[:, self.no_id]
            out.append((py / (py + pn).clamp_min(1e-12)).cpu())
        return torch.cat(out).numpy().astype(np.float64) if out else np.zeros(0)


class EmbeddedVQA:
    """The embedded world's attribute VQA behind the same ``p_yes`` interface."""

    def __init__(self, net, device="cpu"):
        self.net = net.to(device).eval()
        self.device = device
        self.unparsed = 0

    def _attrs(self, question: str) -> dict | None:
        from sara.data.procedural import parse_caption

        t = question.strip().rstrip("?").strip()
        try:
            objs = parse_caption(t)
            if len(objs) == 1:
                return objs[0]
        except ValueError:
            pass
        words = re.findall(r"[a-z]+", t.lower())
        a = {k: next((w for w in words if w in self.net.vocab[k]), None) for k in ("size", "colour", "shape")}
        return a if any(a.values()) else None

    @torch.no_grad()
    def p_yes(self, images, questions: Sequence[str], batch_size: int = 256) -> np.ndarray:
        from PIL import Image

        attrs = [self._attrs(q) for q in questions]
        self.unparsed += sum(a is None for a in attrs)
        size = self.net.image_size
        ims = [np.asarray(im.resize((size, size), Image.BICUBIC) if im.size != (size, size) else im) for im in load_images(images)]
        x = torch.from_numpy(np.stack(ims)).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        s, c, h = self.net.query_indices([a or {} for a in attrs])
        out = []
        for i in range(0, len(questions), batch_size):
            sl = slice(i, i + batch_size)
            logit = self.net(x[sl].to(self.device), s[sl].to(self.device), c[sl].to(self.device), h[sl].to(self.device))
            out.append(torch.sigmoid(logit.float()).cpu())
        p = torch.cat(out).numpy().astype(np.float64)
        p[[a is None for a in attrs]] = 0.5  # a phrase the attribute VQA cannot read: no information
        return p


def load_vqa(kind: str = "embedded", device="cpu", weights: str | os.PathLike | None = None):
    if kind == "embedded":
        from .embedded import load_attr_vqa

        return EmbeddedVQA(load_attr_vqa(weights, device), device)
    if kind == "real":
        return BlipVQA.from_dir(resolve_real("blip_vqa", weights), device)
    raise ValueError(f"unknown VQA kind {kind!r}: use 'embedded' or 'real'")


def bvqa_scores(images, prompts: Sequence[str], vqa) -> np.ndarray:
    """Per image: product over the prompt's noun phrases of P(yes)/(P(yes)+P(no))."""
    if len(images) != len(prompts):
        raise ValueError(f"B-VQA: {len(images)} images but {len(prompts)} prompts")
    if len(images) == 0:
        raise ValueError("B-VQA: no images")
    images = load_images(images)
    q_img, q_text, owner = [], [], []
    for i, (im, pr) in enumerate(zip(images, prompts)):
        for ph in noun_phrases(pr):
            q_img.append(im)
            q_text.append(f"{ph}?")
            owner.append(i)
    scores = np.ones(len(images), np.float64)
    if q_text:
        p = vqa.p_yes(q_img, q_text)
        np.multiply.at(scores, np.asarray(owner), p)
    return scores


def bvqa(images, prompts: Sequence[str], vqa) -> float:
    return float(bvqa_scores(images, prompts, vqa).mean())
