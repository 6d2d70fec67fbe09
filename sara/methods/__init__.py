"""The compared fine-tuning methods, one file each, behind :class:`sara.methods.base.Method`.

=============  ==========================================  =========================================
config         class                                       knob (solved from the budget)
=============  ==========================================  =========================================
sara           ``sara.methods.sara.SaRAMethod``            threshold θ (or k smallest, budget_mode=k)
sara_no_ppa    same, ``progressive_iter: null``            θ
sara_no_rank   same, ``lambda_rank: 0``                    θ
sara_plain     same, neither                               θ
largest        same, ``rule: largest``                     k
random         same, ``rule: random``                      k
lora / dora    ``sara.methods.lora.LoRA`` / ``dora.DoRA``  rank (per module: r or r + 1)
adaptformer    ``sara.methods.adaptformer.AdaptFormer``    bottleneck (per module: b or b + 1)
lt_sft         ``sara.methods.lt_sft.LTSFT``               k (``lt_sft_dense``: dense-gradient masks)
diffpruning    ``sara.methods.diffpruning.DiffPruning``    k
fishmask       ``sara.methods.fishmask.FishMask``          k
full           ``sara.methods.full.FullFineTune``          none
shira          ``sara.methods.shira.SHiRA`` (peft)         rank (layers left out; nn.Linear only)
super_tuning   ``sara.methods.super_tuning.SuperTuning``   sparsity (peft; nn.Linear only)
=============  ==========================================  =========================================

Each method writes what it trained into the run directory (``method.save_weights``, the one
registration point for files; :mod:`sara.weights` lists the formats).

``textual_inversion`` (``sara.methods.textual_inversion.TextualInversion``, customisation runs only)
trains one new token's text-encoder embedding row and no denoiser weight; it has no knob.

Budget solving and ``python -m sara.budget``: :mod:`sara.budget`. Imports here stay lazy (diffusers
and peft load only with the method that needs them).
"""
