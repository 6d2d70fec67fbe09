"""Textual Inversion (Gal et al. 2022): one new token whose embedding row is all that is trained.

``apply`` adds ``placeholder_token`` (default ``<sks>``) to the backbone's tokenizer, grows the text
encoder's token embedding by one row (the old rows are copied unchanged), initialises the new row
from ``initializer_token`` (default: the class noun of the customisation run) and replaces the
embedding module by :class:`RowEmbedding`: the frozen table plus one trainable row for the new
id. Only that row reaches the optimizer, so every other row, the rest of the text encoder and
the denoiser stay bit-identical. The denoiser is not trained (no prior preservation either).

The method needs the text encoder: it takes the backbone from ``ctx.extra["backbone"]`` (the
trainer's :class:`~sara.methods.base.PrepareContext`). After the last training step the learned
embedding is written as ``<run_dir>/learned_embeds.safetensors`` (``{placeholder_token:
[1, dim]}``), the format of diffusers' ``textual_inversion.py``, which
``StableDiffusionPipeline.load_textual_inversion`` loads.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path

import torch
from torch import nn

from ._util import freeze
from .base import Method, PrepareContext

log = logging.getLogger(__name__)

LEARNED_EMBEDS = "learned_embeds.safetensors"


class RowEmbedding(nn.Module):
    """An ``nn.Embedding`` whose row ``token_id`` is read from a separate trainable ``row``."""

    def __init__(self, base: nn.Embedding, token_id: int, init: torch.Tensor) -> None:
        super().__init__()
        self.base = base
        self.token_id = int(token_id)
        self.row = nn.Parameter(init.detach().clone().to(base.weight.dtype))

    @property
    def weight(self) -> torch.Tensor:  # what get_input_embeddings().weight callers expect
        return self.base.weight

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        out = self.base(input_ids)
        mask = (input_ids == self.token_id).unsqueeze(-1)
        return torch.where(mask, self.row.to(out.dtype), out)


class TextualInversion(Method):
    name = "textual_inversion"
    knob = ""
    #: read by sara.customisation: prompts use the placeholder token; no prior preservation
    trains_text_embedding = True

    def __init__(self, placeholder_token: str = "<sks>", initializer_token: str | None = None,
                 lr: float | None = 5e-3, name: str | None = None) -> None:
        super().__init__()
        if name:
            self.name = name
        if not isinstance(placeholder_token, str) or not placeholder_token.strip() or " " in placeholder_token:
            raise ValueError(f"textual_inversion: placeholder_token must be one word, got {placeholder_token!r}")
        self.placeholder_token = placeholder_token
        self.initializer_token = initializer_token
        self.lr = lr
        self.backbone = None
        self.embedding: RowEmbedding | None = None
        self.token_id: int | None = None
        self.run_dir: Path | None = None
        self._trainable: list[nn.Parameter] = []

    # --- budget: one text-encoder row, whatever the budget -------------------------------------------
    def solve_budget(self, denoiser: nn.Module, target: int):
        return None, 0  # no entry of the denoiser is trained

    def _dim(self) -> int:
        return int(self.embedding.row.numel()) if self.embedding is not None else 0

    # --- life cycle -------------------------------------------------------------------------------
    def apply(self, denoiser: nn.Module, budget: int | None = None,
              ctx: PrepareContext | None = None) -> nn.Module:
        backbone = (ctx.extra.get("backbone") if ctx is not None else None)
        if backbone is None or backbone.text_encoder is None:
            raise ValueError("textual_inversion trains a text-encoder embedding: apply() needs the backbone in "
                             "ctx.extra['backbone'] (the trainer passes it)")
        self.backbone = backbone
        self.run_dir = Path(ctx.extra["run_dir"]) if ctx.extra.get("run_dir") else None
        self.target_params = budget
        tok, te = backbone.tokenizer, backbone.text_encoder
        init_word = self.initializer_token or ctx.extra.get("class_noun")
        if not init_word:
            raise ValueError("textual_inversion: set method.initializer_token (a word the tokenizer knows, e.g. "
                             "the class noun)")
        init_ids = tok(init_word, add_special_tokens=False)["input_ids"]
        if tok.add_tokens([self.placeholder_token]) != 1:
            raise ValueError(f"textual_inversion: placeholder token {self.placeholder_token!r} is already in the "
                             "tokenizer; choose a new one")
        self.token_id = int(tok.convert_tokens_to_ids(self.placeholder_token))
        te.resize_token_embeddings(len(tok), mean_resizing=False)  # the new row is set below
        base = te.get_input_embeddings()
        with torch.no_grad():
            init = base.weight[init_ids].float().mean(0)
            base.weight[self.token_id] = init.to(base.weight.dtype)
        freeze(denoiser)
        freeze(te)
        self.embedding = RowEmbedding(base, self.token_id, init)
        te.set_input_embeddings(self.embedding)
        self._trainable = [self.embedding.row]
        backbone.train_text_encoder = True  # encode prompts with gradients (only the row is trained)
        self.knob_value = init_word
        if budget is not None:
            log.warning("method=textual_inversion trains one embedding row (%d values); the budget of %d "
                        "parameters does not apply", self._dim(), budget)
        return denoiser

    def make_optimizer(self, lr: float | None, weight_decay: float = 1e-2,
                       betas: tuple[float, float] = (0.9, 0.999)) -> torch.optim.Optimizer:
        if self.embedding is None:
            raise RuntimeError("call apply() before make_optimizer()")
        # the trainer's lr is the budget's (eq12) or fixed rate of the denoiser methods: an
        # embedding row needs its own (diffusers' textual_inversion: 5e-4 x batch scale)
        return torch.optim.AdamW(self._trainable, lr=self.lr if self.lr is not None else lr,
                                 weight_decay=weight_decay, betas=tuple(betas))

    def num_trainable(self) -> int:
        return self._dim()

    def trained_state_dict(self) -> dict[str, torch.Tensor]:
        return {"placeholder_embedding": self.embedding.row.detach()}

    def load_trained_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if set(state) != {"placeholder_embedding"}:
            raise KeyError(f"textual_inversion: expected the key 'placeholder_embedding', got {sorted(state)[:3]}")
        with torch.no_grad():
            self.embedding.row.copy_(state["placeholder_embedding"].to(self.embedding.row.dtype))

    def restore(self, denoiser, state, budget=None):
        raise ValueError("textual_inversion changes a text-encoder embedding, not the denoiser: it has no weight "
                         "delta to restore, scale or merge")

    def merged(self, module: nn.Module) -> nn.Module:
        """Write the learned row into the embedding table and put the plain table back (the
        tokenizer keeps the new token); ``module`` (the denoiser) is returned unchanged."""
        te = self.backbone.text_encoder
        if isinstance(te.get_input_embeddings(), RowEmbedding):
            with torch.no_grad():
                self.embedding.base.weight[self.token_id] = self.embedding.row.detach()
            te.set_input_embeddings(self.embedding.base)
        self.backbone.train_text_encoder = False
        return module

    # --- export -------------------------------------------------------------------------------------
    def save_learned_embeds(self, path) -> Path:
        """``{placeholder_token: [1, dim]}`` as safetensors (diffusers' textual-inversion format)."""
        from safetensors.torch import save_file

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        save_file({self.placeholder_token: self.embedding.row.detach().float().cpu().reshape(1, -1).contiguous()},
                  os.fspath(tmp), metadata={"initializer_token": str(self.knob_value)})
        os.replace(tmp, path)
        return path

    def on_step_end(self, step: int, total: int) -> None:
        if step == total and self.run_dir is not None:
            self.save_learned_embeds(self.run_dir / LEARNED_EMBEDS)

    def record(self) -> dict:
        rec = super().record()
        rec.update({"placeholder_token": self.placeholder_token, "initializer_token": self.knob_value,
                    "token_id": self.token_id,
                    "learned_embeds": str(self.run_dir / LEARNED_EMBEDS) if self.run_dir else None})
        return rec
