#!/bin/bash
# Issue 4 video benchmark: 8 frames at 1024^2, 1 and 2 objects, SAM 2.1 Hiera-T, ours then the
# official predictor (../shared/reference/bench.py sam2). Usage: tools/bench/video.sh [FULL] [OUT]
set -euo pipefail
FULL=${1:-/tmp/full}; OUT=${2:-/tmp/bench}; VENV=${REF_VENV:-/tmp/refharness/venv}
mkdir -p "$OUT"; cd "$(dirname "$0")/../.."
cargo build --release -p fastsam2-cli
./target/release/fastsam2 --threads 2 bench video --checkpoint "$FULL/sam2.1_hiera_t/weights.safetensors" \
   --objects 1,2 --reps 6 --json "$OUT/ours_video.json" > /dev/null
# the opt-in reduced-precision setting (bf16 attention weights in the cross-attention's value
# products; it changes nothing on CPUs without AVX-512 BF16 or with AMX)
./target/release/fastsam2 --threads 2 --attention-weights bf16 bench video \
   --checkpoint "$FULL/sam2.1_hiera_t/weights.safetensors" \
   --objects 1,2 --reps 4 --json "$OUT/ours_video_bf16w.json" > /dev/null
source "$VENV/bin/activate"
SHARED=$PWD/../shared/reference
(cd "$OUT" && REFHARNESS_OUT="$OUT" python "$SHARED/bench.py" sam2)
python tools/bench/flops_video.py "$OUT/flops_video.json" > /dev/null
cargo build --release -p fastsam2-models --example fma_peak
./target/release/examples/fma_peak > "$OUT/fma_peak.txt"
python tools/bench/video_summary.py "$OUT" | tee "$OUT/summary.txt"
