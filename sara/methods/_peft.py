"""What the methods that run through peft share: peft adapter folders (save / load, with
``PeftModel``'s own file and key names) and folding an injected adapter into the base weights."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ._util import freeze, replace_dir

#: PeftModel wraps the model as ``base_model.model``; its saved keys carry this prefix
PEFT_PREFIX = "base_model.model."


def save_peft_adapter(module: nn.Module, config, folder: Path) -> Path:
    """``adapter_config.json`` + ``adapter_model.safetensors`` of the adapter ``default`` injected
    into ``module`` (as ``PeftModel.save_pretrained`` writes them)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    state = {PEFT_PREFIX + k: v
             for k, v in get_peft_model_state_dict(module, adapter_name="default").items()}
    tmp = folder.with_name(f".{folder.name}.tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    config.save_pretrained(str(tmp))
    save_file({k: v.detach().contiguous().cpu() for k, v in state.items()},
              str(tmp / "adapter_model.safetensors"), metadata={"format": "pt"})
    return replace_dir(tmp, folder)


def load_peft_adapter(module: nn.Module, folder: Path, prefixes: tuple[str, ...] = ("lora_",)) -> None:
    """Inverse of :func:`save_peft_adapter` on a module with the same adapter injected;
    ``prefixes``: the adapter's parameter names (every one of them must be in the file)."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    state = {k[len(PEFT_PREFIX):] if k.startswith(PEFT_PREFIX) else k: v
             for k, v in load_file(str(folder / "adapter_model.safetensors")).items()}
    out = set_peft_model_state_dict(module, state, adapter_name="default")
    unexpected = list(getattr(out, "unexpected_keys", []) or [])
    missing = [k for k in getattr(out, "missing_keys", []) or [] if any(p in k for p in prefixes)]
    if missing:
        raise ValueError(f"{folder}: the adapter lacks tensors of the model, e.g. {missing[:3]}")
    if unexpected:
        raise ValueError(f"{folder}: adapter tensors the model does not have, e.g. {unexpected[:3]}")


def merge_and_unload(module: nn.Module) -> nn.Module:
    """Fold every injected peft adapter into its base layer's weights (peft ``merge``) and put the
    base layer back in its place; in place, all parameters frozen."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    with torch.no_grad():
        for name, layer in list(module.named_modules()):
            if not isinstance(layer, BaseTunerLayer):
                continue
            layer.merge()
            base = layer.get_base_layer()
            parent_name, _, attr = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attr, base)
    freeze(module)
    return module


class PeftAdapterMethod:
    """Mixin of a method that is one peft tuner injected into the denoiser's ``nn.Linear`` layers
    (SHiRA, Super-Tuning): peft builds the layers, the method solves its knob from the budget,
    trains the parameters whose names hold ``param_prefix``, saves a peft adapter folder and
    merges with peft's own ``merge``. Subclasses give :meth:`peft_config` and the knob."""

    param_prefix = ""
    weights_name = "adapter"

    def linear_layers(self, denoiser: nn.Module) -> list[tuple[str, nn.Linear]]:
        """The layers peft adapts: every ``nn.Linear`` whose name matches ``target_modules``
        (a regex over the full module name; null: all of them). peft's SHiRA and Super-Tuning
        have no Conv2d layer, so the convolutions stay frozen."""
        import re

        pat = getattr(self, "target_modules", None)
        out = [(n, m) for n, m in denoiser.named_modules()
               if n and isinstance(m, nn.Linear) and (pat is None or re.fullmatch(pat, n))]
        if not out:
            raise ValueError(f"{self.name}: no nn.Linear of the denoiser matches "
                             f"target_modules={pat!r}")
        return out

    def peft_config(self, denoiser: nn.Module | None = None):  # pragma: no cover - abstract
        raise NotImplementedError

    def _inject(self, denoiser: nn.Module, ctx) -> nn.Module:
        from peft import inject_adapter_in_model

        freeze(denoiser)
        if ctx is not None:
            torch.manual_seed(ctx.seed)
        self._config = self.peft_config(denoiser)
        model = inject_adapter_in_model(self._config, denoiser, adapter_name="default")
        freeze(model)
        self._trainable, self._names = [], []
        for n, p in model.named_parameters():
            if self.param_prefix in n:
                p.requires_grad_(True)
                self._trainable.append(p)
                self._names.append(n)
        self.module = model
        return model

    def save_weights(self, run_dir) -> Path:
        return save_peft_adapter(self.module, self._config, Path(run_dir) / self.weights_name)

    def load_weights(self, denoiser: nn.Module, run_dir, budget: int | None = None) -> nn.Module:
        from peft import PeftConfig

        folder = Path(run_dir) / self.weights_name
        self.set_knob_from(PeftConfig.from_pretrained(str(folder)), denoiser)
        module = self.apply(denoiser, budget=None)
        self.target_params = budget
        load_peft_adapter(module, folder, prefixes=(self.param_prefix,))
        return module

    def set_knob_from(self, config, denoiser: nn.Module) -> None:  # pragma: no cover - abstract
        """Set the knob from a saved adapter's peft config (``denoiser``: the plain model)."""
        raise NotImplementedError

    def merged(self, module: nn.Module) -> nn.Module:
        return merge_and_unload(module)
