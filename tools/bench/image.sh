#!/bin/bash
# Issue 3 image benchmark: FastSAM2 vs the official PyTorch code, same machine, one after the other.
# Needs the full-size seeded fixtures (tools/fixtures/make_sam_fixtures.py --model vit_b|mobilesam)
# and the reference harness venv (../shared/reference). Usage: tools/bench/image.sh [FULL] [OUT]
set -euo pipefail
FULL=${1:-/tmp/full}; OUT=${2:-/tmp/bench}; VENV=${REF_VENV:-/tmp/refharness/venv}
mkdir -p "$OUT"; cd "$(dirname "$0")/../.."
cargo build --release -p fastsam2-cli
B=$PWD/target/release/fastsam2
for m in sam_vit_b mobilesam_vit_t; do
  $B --threads 2 bench image --checkpoint "$FULL/$m/weights.safetensors" --reps 5 --prompt-reps 11 \
     --json "$OUT/ours_$m.json" > /dev/null
done
source "$VENV/bin/activate"
SHARED=$PWD/../shared/reference
(cd "$OUT" && for m in sam_vit_b mobilesam; do REFHARNESS_OUT="$OUT" python "$SHARED/bench.py" $m; done)
