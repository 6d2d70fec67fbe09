"""DoRA (Liu et al. 2024) through peft (``LoraConfig(use_dora=True)``): LoRA on the direction of
each adapted weight plus a trained per-output-channel magnitude vector. Knob: the rank, per
module as in LoRA (trainable count = sum over adapted layers of ``r_i (in + out) + out``). Merges
like LoRA."""
from __future__ import annotations

from .lora import LoRA


class DoRA(LoRA):
    name = "dora"
    knob = "rank"
    use_dora = True
