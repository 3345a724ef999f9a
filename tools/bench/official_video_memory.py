"""Peak RSS of the official SAM 2 video predictor as a function of video length (the growth
FastSAM2's streaming sessions avoid). Same synthetic frames as `fastsam2 bench stream`
(textured background, moving disk and square, N x size x size), one object clicked on frame 0,
propagate_in_video over all frames. Run once per length (peak RSS is per process):

  python tools/bench/official_video_memory.py --frames 50 --size 512 [--micro]

Prints a JSON line: frames, peak RSS MiB, seconds. Uses the harness venv (torch + sam2) and its
seeded random weights (make_sam2_refs.build: Hiera-T, or the micro config with --micro).
"""
import argparse
import json
import os
import resource
import sys
import time

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "..", "..", "shared", "reference"))


def frame(t, size):
    s = size / 1024.0
    y, x = np.mgrid[0:size, 0:size].astype(np.float32) / s
    tf = float(t % 16)
    bg = np.stack([90 + 40 * np.sin((x + 7 * t) / 41.0) * np.cos(y / 67.0),
                   110 + 40 * np.cos((x - 3 * t) / 59.0 + y / 83.0),
                   100 + 30 * np.sin((x + y) / 97.0)], -1)
    px, py = x * s, y * s
    disk = (px - (330 + 40 * tf) * s) ** 2 + (py - (400 + 10 * tf) * s) ** 2 < (110 * s) ** 2
    sq = (np.abs(px - (720 - 25 * tf) * s) < 100 * s) & (np.abs(py - (650 - 20 * tf) * s) < 100 * s)
    bg[disk] = [220, 40, 40]
    bg[sq] = [30, 60, 210]
    bg += 12 * np.sin(x / 5.0 + y / 7.0)[..., None]
    return np.clip(np.round(bg), 0, 255).astype(np.uint8)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--frames", type=int, default=50)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--micro", action="store_true")
    args = ap.parse_args()
    import make_sam2_refs as m
    from PIL import Image

    torch.set_num_threads(2)
    torch.set_grad_enabled(False)
    pred = m.build(micro=args.micro)
    # frames through sam2's own loader (PIL resize to 1024), as a folder of jpg-named PNGs
    d = f"/tmp/official_video_memory_{args.size}_{args.frames}"
    os.makedirs(d, exist_ok=True)
    for t in range(args.frames):
        p = os.path.join(d, f"{t:05d}.jpg")
        if not os.path.exists(p):
            Image.fromarray(frame(t, args.size)).save(p, format="PNG")
    t0 = time.time()
    state = pred.init_state(d)
    s = args.size / 1024.0
    pred.add_new_points_or_box(state, frame_idx=0, obj_id=1, points=np.array([[330 * s, 400 * s]], np.float32),
                               labels=np.array([1], np.int32))
    for _ in pred.propagate_in_video(state):
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"frames": args.frames, "size": args.size, "micro": args.micro, "peak_rss_mib": rss,
                      "seconds": time.time() - t0}))


if __name__ == "__main__":
    main()
