"""Summary of one tools/bench/video.sh run: per-frame times, the second object's cost, and that
cost against the arithmetic (flops_video.py) and this CPU's FMA peak (fma_peak).

Usage: python tools/bench/video_summary.py OUT   (OUT as given to video.sh)
"""
import json
import re
import sys


def main(out):
    ours = json.load(open(f"{out}/ours_video.json"))["results"]
    ref = json.load(open(f"{out}/bench_sam2.json"))["results"]
    flops = json.load(open(f"{out}/flops_video.json"))
    peak = max(float(m.group(1)) for m in
               re.finditer(r"(\d+(?:\.\d+)?) GFLOP/s", open(f"{out}/fma_peak.txt").read())
)
    t1 = ours["video_1obj"]["median_run"]["propagate_per_tracked_frame_ms"]
    t2 = ours["video_2obj"]["median_run"]["propagate_per_tracked_frame_ms"]
    paired = ours["video_2obj"]["median_ratio_to_first_count"]
    r1 = ref["video_1obj"]["propagate_per_tracked_frame_ms"]
    r2 = ref["video_2obj"]["propagate_per_tracked_frame_ms"]
    print(f"per tracked frame, 1 object : ours {t1:7.0f} ms  official {r1:7.0f} ms  ratio {r1 / t1:.2f}x")
    print(f"per tracked frame, 2 objects: ours {t2:7.0f} ms  official {r2:7.0f} ms  ratio {r2 / t2:.2f}x")
    print(f"second object: ours +{(t2 / t1 - 1) * 100:.1f}% (medians), +{(paired - 1) * 100:.1f}%"
          f" (median of paired runs); official +{(r2 / r1 - 1) * 100:.1f}%")
    f = flops["fastsam2"]
    o = flops["official"]
    print(f"second object's share of the arithmetic: ours {f['second_object_share'] * 100:.1f}%"
          f" ({f['per_object_gflop']:.0f} of {f['per_tracked_frame_gflop_1obj']:.0f} GFLOP),"
          f" official {o['second_object_share'] * 100:.1f}%")
    m = t2 - t1
    shared_ms = t1 - m
    shared_rate = f["shared_gflop"] / shared_ms  # GFLOP per ms = TFLOP/s
    obj_rate = f["per_object_gflop"] / m
    need = f["per_object_gflop"] / (0.3 / 0.7 * shared_ms)
    print(f"FMA peak {peak:.0f} GFLOP/s; shared work {shared_rate * 1e3:.0f} GFLOP/s"
          f" ({shared_rate * 1e3 / peak * 100:.0f}%), per-object work {obj_rate * 1e3:.0f} GFLOP/s"
          f" ({obj_rate * 1e3 / peak * 100:.0f}%)")
    print(f"a second object at <= 30% needs the per-object work at >= {need * 1e3:.0f} GFLOP/s"
          f" ({need * 1e3 / peak * 100:.0f}% of the FMA peak) with the shared work as measured")
    try:
        opt = json.load(open(f"{out}/ours_video_bf16w.json"))["results"]
    except FileNotFoundError:
        return
    b1 = opt["video_1obj"]["median_run"]["propagate_per_tracked_frame_ms"]
    b2 = opt["video_2obj"]["median_run"]["propagate_per_tracked_frame_ms"]
    bp = opt["video_2obj"]["median_ratio_to_first_count"]
    print(f"--attention-weights bf16 (opt-in): ours {b1:.0f} / {b2:.0f} ms per tracked frame"
          f" (ratios {r1 / b1:.2f}x / {r2 / b2:.2f}x), second object +{(b2 / b1 - 1) * 100:.1f}%"
          f" (medians), +{(bp - 1) * 100:.1f}% (median of paired runs)")


if __name__ == "__main__":
    main(sys.argv[1])
