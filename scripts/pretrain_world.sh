#!/usr/bin/env bash
# Pre-train the latent embedded world end to end on one GPU and validate it; writes the zoo
# folders and their manifests. Sized for one H100/H200 call of under 10 minutes:
#   VAE ~100 s, UNet + text encoder ~210 s (+ prompt following on the 500 prompts), content CLIP
#   (early stop, ~80 s), evaluator validation.
#
#   bash scripts/pretrain_world.sh                 # everything
#   STAGES="vae unet" bash scripts/pretrain_world.sh   # some stages (vae | unet | clip | validate)
#   DEVICE=cpu VAE_S=60 UNET_S=60 bash scripts/pretrain_world.sh   # a (much weaker) CPU run
#
# Outputs: outputs/pretrain/vae (AutoencoderKL + manifest.json, copied into the pipeline),
# sara/zoo/tiny_latent (StableDiffusionPipeline folder + manifest.json: command, seeds, steps,
# wall time, device, VAE and prompt-following validation), sara/zoo/evaluators/clip (+ manifest),
# outputs/pretrain/validate_evaluators.json. Every stage is resumable (training state under
# outputs/pretrain/*_ckpt; pass RESUME=1 to continue a stopped stage instead of starting over).
set -euo pipefail
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
STAGES=${STAGES:-"vae unet clip validate"}
VAE_S=${VAE_S:-100}          # seconds of VAE training (a cap; --steps sets the schedule)
VAE_STEPS=${VAE_STEPS:-1500}
UNET_S=${UNET_S:-210}        # seconds of UNet training (the step count is fitted to it by a probe)
OUT=outputs/pretrain
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - t0 ))s] $*"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }

if has vae; then
  stamp "VAE"
  resume=(); [[ -n "${RESUME:-}" && -f $OUT/vae_ckpt/state.pt ]] && resume=(--resume "$OUT/vae_ckpt")
  python scripts/pretrain_vae.py --device "$DEVICE" --out "$OUT/vae" --ckpt "$OUT/vae_ckpt" "${resume[@]}" \
    --factor 4 --batch-size 256 --steps "$VAE_STEPS" --time-budget "$VAE_S" --lr 1e-3 --n-val 300 --log-every 100
fi
if has unet; then
  stamp "UNet + text encoder (latent world)"
  resume=(); [[ -n "${RESUME:-}" && -f $OUT/tiny_latent_ckpt/state.pt ]] && resume=(--resume "$OUT/tiny_latent_ckpt")
  python scripts/pretrain_tiny.py --world tiny_latent --vae "$OUT/vae" --device "$DEVICE" --out sara/zoo/tiny_latent \
    --ckpt "$OUT/tiny_latent_ckpt" "${resume[@]}" --time-budget "$UNET_S" --batch-size 512 --lr 1e-3 \
    --eval-prompts 500 --no-progress --log-every 200
fi
if has clip; then
  stamp "content CLIP evaluator"
  python scripts/train_evaluators.py --only clip --device "$DEVICE" --out sara/zoo/evaluators --clip-steps 3000
fi
if has validate; then
  stamp "evaluator validation"
  python scripts/validate_evaluators.py --device "$DEVICE" --json "$OUT/validate_evaluators.json" --write-manifest || \
    stamp "evaluator validation FAILED (see $OUT/validate_evaluators.json)"
fi
stamp "done"
du -sh sara/zoo/* || true
