#!/usr/bin/env python3
"""Time the official evaluation code on the benchmark data `eval_speed` generates.

    bench_official.py davis DATA_DIR      # DATA_DIR/gt (DAVIS layout), DATA_DIR/pred
    bench_official.py coco GT.json RES.json

Prints one JSON line: {"seconds": wall time of the official evaluation, "results": {...}}.
The timed part is what the official entry points do end to end (reading the files
included): davis2017-evaluation's DAVISEvaluation.evaluate + the global means of
evaluation_method.py; pycocotools' COCO() + loadRes + evaluate/accumulate/summarize.

Setup: see README.md (venv; DAVIS2017_EVAL=path of a davis2017-evaluation checkout).
"""
import contextlib
import io
import json
import os
import sys
import time


def davis(data_dir):
    sys.path.insert(0, os.environ["DAVIS2017_EVAL"])
    import numpy as np
    from davis2017.evaluation import DAVISEvaluation

    t0 = time.perf_counter()
    with contextlib.redirect_stderr(io.StringIO()):
        ev = DAVISEvaluation(davis_root=os.path.join(data_dir, "gt"), task="semi-supervised", gt_set="val", codalab=True)
        m = ev.evaluate(os.path.join(data_dir, "pred"))
    J, F = m["J"], m["F"]
    res = {
        "J&F-Mean": float((np.mean(J["M"]) + np.mean(F["M"])) / 2.0),
        "J-Mean": float(np.mean(J["M"])), "J-Recall": float(np.mean(J["R"])), "J-Decay": float(np.mean(J["D"])),
        "F-Mean": float(np.mean(F["M"])), "F-Recall": float(np.mean(F["R"])), "F-Decay": float(np.mean(F["D"])),
    }
    return time.perf_counter() - t0, res


def coco(gt_path, res_path):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    t0 = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()):
        gt = COCO(gt_path)
        dt = gt.loadRes(res_path)
        ev = COCOeval(gt, dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return time.perf_counter() - t0, {k: float(v) for k, v in zip(keys, ev.stats)}


def main():
    if sys.argv[1] == "davis":
        secs, res = davis(sys.argv[2])
    elif sys.argv[1] == "coco":
        secs, res = coco(sys.argv[2], sys.argv[3])
    else:
        raise SystemExit(__doc__)
    print(json.dumps({"seconds": secs, "results": res}))


if __name__ == "__main__":
    main()
