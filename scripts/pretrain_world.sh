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
# The tiny SD 2 / SDXL / SD 3 backbones (sara/backbones/tiny_families.py), sized for one GPU call
# of under 10 minutes (VAE_S + FAMILY_S + start-up and validation; not yet timed on a GPU):
#   STAGES="vae families" bash scripts/pretrain_world.sh
# "families" = vae16 (SD 3's 16-channel VAE, beside the VAE stage) then tiny_sd2, tiny_sdxl and
# tiny_sd3 side by side on the one GPU (FAMILY_S seconds of training each, FAMILY_WORKERS loader
# workers each; PARALLEL=0 runs them one after the other, e.g. one per call with more FAMILY_S).
# tiny_sd2 / tiny_sdxl use outputs/pretrain/vae, tiny_sd3 outputs/pretrain/vae16; each writes
# sara/zoo/<name> (denoiser and VAE in fp16; manifest with prompt following).
# Every denoiser pre-trains on the varied-looks domain (sara.data.looks: backgrounds, palettes,
# outlines, glows, textures), so the style sets lie within its support as they do for Stable Diffusion.
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
STAGES=${STAGES/families/vae16 tiny_sd2 tiny_sdxl tiny_sd3}
FAMILY_S=${FAMILY_S:-240}    # seconds of training per tiny SD 2 / SDXL / SD 3 backbone
PARALLEL=${PARALLEL:-1}
FAMILY_BATCH=${FAMILY_BATCH:-512}
FAMILY_WORKERS=${FAMILY_WORKERS:-5}   # loader workers per backbone (rendering 64 px images is ~2 ms each on one core)
EVAL_PROMPTS=${EVAL_PROMPTS:-500}
fbudget=(--time-budget "$FAMILY_S"); [[ -n "${FAMILY_STEPS:-}" ]] && fbudget=(--steps "$FAMILY_STEPS")  # a fixed schedule
VAE_S=${VAE_S:-100}          # seconds of VAE training (a cap; --steps sets the schedule)
VAE_STEPS=${VAE_STEPS:-1500}
UNET_S=${UNET_S:-210}        # seconds of UNet training (the step count is fitted to it by a probe)
OUT=outputs/pretrain
mkdir -p "$OUT"
t0=$(date +%s)
stamp() { echo "[$(date +%H:%M:%S) +$(( $(date +%s) - t0 ))s] $*"; }
has() { [[ " $STAGES " == *" $1 "* ]]; }

vae_stage() {  # name, extra args
  local name=$1; shift
  resume=(); [[ -n "${RESUME:-}" && -f $OUT/${name}_ckpt/state.pt ]] && resume=(--resume "$OUT/${name}_ckpt")
  python scripts/pretrain_vae.py --device "$DEVICE" --out "$OUT/$name" --ckpt "$OUT/${name}_ckpt" "${resume[@]}" \
    --factor 4 --batch-size 256 --steps "$VAE_STEPS" --time-budget "$VAE_S" --lr 1e-3 --n-val "${VAE_NVAL:-300}" --log-every 100 "$@"
}
family_stage() {  # world, vae folder
  local world=$1 vae=$2
  resume=(); [[ -n "${RESUME:-}" && -f $OUT/${world}_ckpt/state.pt ]] && resume=(--resume "$OUT/${world}_ckpt")
  python scripts/pretrain_tiny.py --world "$world" --vae "$vae" --device "$DEVICE" --out "sara/zoo/$world" \
    --ckpt "$OUT/${world}_ckpt" "${resume[@]}" "${fbudget[@]}" --batch-size "$FAMILY_BATCH" --lr 1e-3 --workers "$FAMILY_WORKERS" --looks varied \
    --eval-prompts "$EVAL_PROMPTS" --no-progress --log-every 200
}
# run "$@" now (PARALLEL=0) or in the background, logging to $OUT/<name>.log; `finish` waits for all
pids=(); names=()
launch() {
  local name=$1; shift
  if [[ "$PARALLEL" == 1 ]]; then
    "$@" > "$OUT/$name.log" 2>&1 & pids+=($!); names+=("$name")
  else
    "$@"
  fi
}
finish() {
  local rc=0 i
  for i in "${!pids[@]}"; do
    if wait "${pids[$i]}"; then stamp "${names[$i]} done"; else rc=1; stamp "${names[$i]} FAILED"; fi
    tail -n 3 "$OUT/${names[$i]}.log" || true
  done
  pids=(); names=()
  return $rc
}

if has vae16; then  # beside the VAE stage when PARALLEL=1
  stamp "VAE with 16 latent channels and shift_factor (tiny_sd3)"
  launch vae16 vae_stage vae16 --latent-channels 16 --workers 4
fi
if has vae; then
  stamp "VAE"
  vae_stage vae
fi
finish
if has unet; then
  stamp "UNet + text encoder (latent world)"
  resume=(); [[ -n "${RESUME:-}" && -f $OUT/tiny_latent_ckpt/state.pt ]] && resume=(--resume "$OUT/tiny_latent_ckpt")
  python scripts/pretrain_tiny.py --world tiny_latent --vae "$OUT/vae" --device "$DEVICE" --out sara/zoo/tiny_latent \
    --ckpt "$OUT/tiny_latent_ckpt" "${resume[@]}" --time-budget "$UNET_S" --batch-size 512 --lr 1e-3 \
    --looks varied --eval-prompts 500 --no-progress --log-every 200
fi
for world in tiny_sd2 tiny_sdxl tiny_sd3; do
  if has $world; then
    stamp "$world"
    vae=$OUT/vae; [[ $world == tiny_sd3 ]] && vae=$OUT/vae16
    launch "$world" family_stage "$world" "$vae"
  fi
done
finish
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
