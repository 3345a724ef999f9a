"""FLOPs of the official SAM 2.1 Hiera-T video predictor on the issue-4 bench input (8 frames at
1024^2, 1 and 2 objects clicked on frame 0), counted with torch.utils.flop_counter.

It answers: what share of a tracked frame's arithmetic does a second object add, if every part of
the model ran at the same efficiency?  Matmuls, convolutions and attention are counted (element-wise
work is not).  Usage (reference venv):  python tools/bench/flops_video.py [OUT.json]
"""
import json
import os
import sys

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "shared", "reference"))
import make_sam2_refs as m  # noqa: E402


def main():
    torch.set_num_threads(2)
    frames = m.make_video()
    m.patch_loader(frames)
    pred = m.build()
    m.calibrate_obj_score(pred, frames)
    c0 = m.object_centres(0)
    x = m.frames_to_tensor(frames[:1])
    res = {}
    with torch.inference_mode():
        with FlopCounterMode(display=False) as fc:
            pred.forward_image(x)
        res["image_encoder_gflop"] = fc.get_total_flops() / 1e9
        for n_obj in (1, 2):
            st = pred.init_state("unused")
            for oid in range(1, n_obj + 1):
                pred.add_new_points_or_box(st, frame_idx=0, obj_id=oid,
                                           points=np.array([c0[oid - 1]], np.float32),
                                           labels=np.array([1], np.int32))
            per_frame = []
            per_frame_modules = []
            gen = pred.propagate_in_video(st)
            while True:
                with FlopCounterMode(display=False) as fc:
                    try:
                        next(gen)
                    except StopIteration:
                        break
                per_frame.append(fc.get_total_flops() / 1e9)
                mods = fc.get_flop_counts()
                top = {k: sum(v.values()) / 1e9 for k, v in mods.items()
                       if k.count(".") <= 2}
                per_frame_modules.append(top)
            # frame 0 is the prompted frame (its outputs are already computed); 1..7 are tracked
            tracked = per_frame[1:]
            res[f"video_{n_obj}obj"] = dict(per_frame_gflop=per_frame,
                                             per_tracked_frame_gflop=sum(tracked) / len(tracked),
                                             per_frame_module_gflop=per_frame_modules)
    a = res["video_1obj"]["per_tracked_frame_gflop"]
    b = res["video_2obj"]["per_tracked_frame_gflop"]
    res["official"] = dict(second_object_share=(b - a) / a, per_object_gflop=b - a,
                           shared_gflop=a - (b - a))
    res["fastsam2"] = ours(res["video_1obj"]["per_frame_module_gflop"][1])
    print(json.dumps({k: res[k] for k in ("image_encoder_gflop", "official")}, indent=1))
    print(json.dumps({k: v for k, v in res["fastsam2"].items() if k != "per_tracked_frame"},
                     indent=1))
    if len(sys.argv) > 1:
        with open(sys.argv[1], "w") as f:
            json.dump(res, f, indent=1)


def ours_frame(mods, b, t, n=4096, side=64, d=256, kv=64, mlp=2048, layers=4, num_maskmem=7,
               max_ptrs=16, rank=27):
    """FastSAM2's arithmetic (FLOPs) for tracked frame `t` with `b` objects, from the model's
    dimensions and the kernels' own choices (non-AMX CPU, as `worth_folding` decides):

    - layer 0's self-attention and cross-attention queries are computed once per frame (every
      object has the same layer-0 target), and so are the folded RoPE tables of those queries;
    - cross-attention is either folded (per query, the rotated key projection becomes two
      tables over the grid's columns and rows, each `rank (kv + 1) (hd / 2 + side)`
      multiply-adds through the rotations' rank-27 factors; then `2 kv` per memory token) or
      plain (keys projected and rotated, then `hd + kv` per memory token);
    - the value projection is applied after the attention sum (64 -> 256).
    Element-wise work (norms, softmax exponentials, GELU, residuals) is left out, as in torch's
    counter.  `mods` is the official per-module count of one tracked frame: the image encoder,
    decoder and memory encoder are the same operations (the memory encoder's `pix_feat_proj`
    is computed once per frame for every object).
    """
    f = min(t, num_maskmem)  # memory frames: the prompted frame and up to 6 recent ones
    p = 4 * min(t, max_ptrs)  # object pointers: 4 tokens of 64 channels each
    self_attn = 4 * 2 * n * d * d + 2 * 2 * n * n * d
    q_proj = 2 * n * d * d
    tables_per_query = 2 * rank * (kv + 1) * (d // 2 + side)  # multiply-adds, both axes
    total = 0
    for layer in range(layers):
        shared = layer == 0
        nq = 1 if shared else b  # distinct query sets
        total += nq * (self_attn + q_proj)
        folded = (2.17 * tables_per_query * nq + b * f * n * 2 * kv) < b * f * n * (d + kv)
        if folded:
            total += nq * 2 * n * tables_per_query + nq * n * side * side * (kv + 1)
            total += b * 2 * n * n * f * 2 * kv
        else:
            total += b * (2 * n * f * kv * d + 2 * n * n * f * (d + kv))
        total += b * (2 * n * p * (d + kv)        # pointer keys (not rotated) and values
                      + 2 * n * kv * d + 2 * n * d * d  # value projection, out_proj
                      + 2 * 2 * n * d * mlp)       # MLP
    total /= 1e9
    total += mods["ImageEncoder"] + mods.get("Conv2d", 0.0) + mods["MemoryEncoder.pix_feat_proj"]
    total += b * (mods["MemoryEncoder"] - mods["MemoryEncoder.pix_feat_proj"] + mods["MaskDecoder"])
    return total


def ours(mods, frames=8):
    per = {bb: [ours_frame(mods, bb, t) for t in range(1, frames)] for bb in (1, 2)}
    a, b = (sum(per[bb]) / len(per[bb]) for bb in (1, 2))
    return dict(per_tracked_frame_gflop_1obj=a, per_tracked_frame_gflop_2obj=b,
                per_object_gflop=b - a, shared_gflop=a - (b - a),
                second_object_share=(b - a) / a, per_tracked_frame=per)


if __name__ == "__main__":
    main()
