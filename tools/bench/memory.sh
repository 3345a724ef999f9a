#!/bin/bash
# Issue 4 bounded-memory benchmark: peak RSS of a streaming session over 200 and 2,000 synthetic
# 512x512 frames (micro SAM 2.1, committed fixture; and Hiera-T over 200 frames), then the
# official video predictor's peak RSS for growing lengths on the same frames (~45 min on 2 cores).
# Usage: tools/bench/memory.sh [FULL] [OUT]
set -euo pipefail
FULL=${1:-/tmp/full}; OUT=${2:-/tmp/bench}; VENV=${REF_VENV:-/tmp/refharness/venv}
mkdir -p "$OUT"; cd "$(dirname "$0")/../.."
cargo build --release -p fastsam2-cli
B=./target/release/fastsam2
for n in 200 2000; do
  $B --threads 2 bench stream --checkpoint fixtures/sam2.1_hiera_micro/weights.safetensors \
     --num-frames $n --size 512 --json "$OUT/stream_micro_$n.json" > /dev/null
done
$B --threads 2 bench stream --checkpoint "$FULL/sam2.1_hiera_t/weights.safetensors" \
   --num-frames 200 --size 512 --json "$OUT/stream_t_200.json" > /dev/null
source "$VENV/bin/activate"
for n in 50 100 200; do python tools/bench/official_video_memory.py --frames $n --size 512 --micro; done >> "$OUT/official_memory.jsonl"
for n in 25 50; do python tools/bench/official_video_memory.py --frames $n --size 512; done >> "$OUT/official_memory.jsonl"
