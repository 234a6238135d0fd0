#!/usr/bin/env bash
# Rebuild the bundled demo model (worker/assets/demo/): procedural cartoon faces -> prepared 64 px data
# set -> StyleGAN2 trained from scratch -> G_ema exported with a preview grid and the provenance metric.
# See worker/assets/demo/PROVENANCE.md for the run that produced the committed file.
#
#   scripts/train_demo_model.sh [WORKDIR]        (default /tmp/demo-run; nothing big is written in git)
#
# Environment: KIMG (training length, default 500; the committed model is the newest checkpoint when
# the run was stopped, see PROVENANCE.md), DEVICE (cpu or cuda, default cpu), NUM_GEN (images for the
# metric, default 2000). On a shared CPU the run is niced and single-threaded: with two cores shared
# with other jobs, two OpenMP threads measured ~7x slower than one (threads spin waiting for each other).
set -euo pipefail
cd "$(dirname "$0")/.."

WORK=${1:-/tmp/demo-run}
KIMG=${KIMG:-500}
DEVICE=${DEVICE:-cpu}
NUM_GEN=${NUM_GEN:-2000}
DEMO=worker/assets/demo
MODEL=$DEMO/cartoon-faces-64.safetensors
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
run() { nice -n 10 "$@"; }
mkdir -p "$WORK"

# 1. Data: 8000 faces (image i depends only on seed and i), prepared as any user upload would be.
run python scripts/make_cartoon_faces.py --out "$WORK/faces-png" --count 8000 --resolution 64 --seed 0
run python -m gan.cli dataset prepare --source "$WORK/faces-png" --dest "$WORK/faces64.zip" --resolution 64 --quiet

# 2. Training. --cfg cifar is the official small-data StyleGAN2 config (no path-length or style-mixing
# regularisation, plain D), chosen because it does the least work per image; the overrides shrink the
# networks to what a CPU trains in an hour: channels min(2048 / res, 64) (64 up to 32 px, 32 at 64 px),
# 128-d z and w, 2 mapping layers, minibatch-std groups of 4 (the preset's 32 exceeds the batch), and R1
# gamma 0.05 = the auto heuristic 0.0002 * 64^2 / 16. No ADA: 16k images (with x-flips) are not seen
# often enough in a few dozen kimg for D to overfit them.
run python -m gan.cli train --data "$WORK/faces64.zip" --outdir "$WORK/run" --cfg cifar \
    --cbase 2048 --cmax 64 --map 2 --z-dim 128 --w-dim 128 --mbstd-group 4 --gamma 0.05 --batch 16 \
    --mirror --aug noaug --kimg "$KIMG" --tick 0.5 --snap 6 --keep 4 --device "$DEVICE" --workers 0 --seed 0

# 3. Export G_ema of the newest checkpoint, with its licence and source in the file, and a preview.
run python scripts/demo_model.py export "$WORK/run" "$MODEL"
run python scripts/demo_model.py grid "$MODEL" "$DEMO/preview.png" --seeds 0-31 --cols 8

# 4. Metric: FID/KID in a stand-in feature space (the official Inception detector cannot be fetched
# here; see scripts/demo_model.py PixelFeatures), against the whole training set, with its floor: the
# same metric for as many fresh faces from the generating script (seed 1, never trained on).
run python scripts/demo_model.py detector "$WORK/pixels.pt"
run python -m gan.cli metrics --network "$MODEL" --data "$WORK/faces64.zip" --metrics fid50k_full,kid50k_full \
    --detector "$WORK/pixels.pt" --num-gen "$NUM_GEN"
run python scripts/make_cartoon_faces.py --out "$WORK/heldout.zip" --count "$NUM_GEN" --resolution 64 --seed 1
run python scripts/demo_model.py reference "$WORK/pixels.pt" "$WORK/faces64.zip" "$WORK/heldout.zip"
