#!/usr/bin/env python3
"""Generate synthetic inputs and the official implementations' outputs on them.

Writes into --out (crates/fastsam2-eval/tests/fixtures):

  rle_ref.json                 pycocotools mask API: encode/decode/area/toBbox,
                               frPyObjects (polygons, bboxes, uncompressed RLE),
                               merge, iou (with crowd)
  coco/gt.json, coco/res_*.json, coco/ref.json
                               COCOeval(iouType='segm') summary stats
  panoptic/{gt,pred}.json + PNG folders, panoptic/ref.json
                               panopticapi.evaluation.pq_compute
  davis/{gt,pred}/..., davis/ref.json
                               davis2017-evaluation semi-supervised J&F
  interactive/ref.json         RITM Clicker + evaluate_sample + compute_noc_metric
                               with a scripted predictor, distance transforms

Setup: see tools/eval_refs/README.md (venv + DAVIS2017_EVAL, PANOPTICAPI, RITM).
"""
import argparse
import json
import os
import shutil
import sys
import types

import numpy as np
import cv2
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval


def rows(mask):
    return ["".join("1" if v else "0" for v in r) for r in np.asarray(mask).astype(bool)]


def fortran(mask):
    return np.asfortranarray(np.asarray(mask, dtype=np.uint8))


def rle_str(rle):
    c = rle["counts"]
    return c.decode("ascii") if isinstance(c, bytes) else c


def ellipse(h, w, cy, cx, ry, rx, angle=0.0):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float64)
    ca, sa = np.cos(angle), np.sin(angle)
    dy, dx = yy - cy, xx - cx
    u = ca * dx + sa * dy
    v = -sa * dx + ca * dy
    return (u / max(rx, 1e-6)) ** 2 + (v / max(ry, 1e-6)) ** 2 <= 1.0


def star_polygon(rng, cx, cy, r, n, rmin=0.4):
    ang = np.sort(rng.uniform(0, 2 * np.pi, n))
    rad = r * rng.uniform(rmin, 1.0, n)
    pts = np.stack([cx + rad * np.cos(ang), cy + rad * np.sin(ang)], 1)
    return [float(round(v, 2)) for v in pts.reshape(-1)]


# --------------------------------------------------------------------------
# RLE / mask API
# --------------------------------------------------------------------------
def gen_rle(out):
    rng = np.random.default_rng(1)
    res = {"masks": [], "polygons": [], "bboxes": [], "uncompressed": [], "merge": [], "iou": []}

    sizes = [(1, 1), (1, 7), (5, 1), (3, 4), (17, 23), (40, 31), (64, 48)]
    masks = []
    for h, w in sizes:
        for kind in ["zeros", "ones", "noise", "blob", "stripes"]:
            if kind == "zeros":
                m = np.zeros((h, w), np.uint8)
            elif kind == "ones":
                m = np.ones((h, w), np.uint8)
            elif kind == "noise":
                m = (rng.random((h, w)) < rng.uniform(0.05, 0.95)).astype(np.uint8)
            elif kind == "blob":
                m = ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.5, h), rng.uniform(0.5, w), rng.uniform(0, 3)).astype(np.uint8)
            else:
                m = np.zeros((h, w), np.uint8)
                m[:, ::3] = 1
                m[::4, :] = 1
            masks.append(m)
    for m in masks:
        rle = mask_utils.encode(fortran(m))
        res["masks"].append({
            "h": int(m.shape[0]), "w": int(m.shape[1]), "rows": rows(m),
            "counts": rle_str(rle), "area": int(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        })

    # polygons: regular, fractional, negative / out of image, duplicate points, self-intersecting,
    # multi-part, very small, long thin
    poly_cases = []
    for (h, w) in [(30, 40), (64, 48), (100, 120), (7, 9)]:
        for _ in range(6):
            parts = [star_polygon(rng, rng.uniform(-5, w + 5), rng.uniform(-5, h + 5), rng.uniform(1, max(h, w) * 0.6), int(rng.integers(3, 12)))
                     for _ in range(int(rng.integers(1, 4)))]
            poly_cases.append((h, w, parts))
        poly_cases.append((h, w, [[0.0, 0.0, w, 0.0, w, h, 0.0, h]]))
        poly_cases.append((h, w, [[1.0, 1.0, 1.0, 1.0, 5.5, 1.0, 5.5, 1.0, 5.5, 4.2, 1.0, 4.2]]))  # duplicate points
        poly_cases.append((h, w, [[2.0, 2.0, 8.0, 6.0, 8.0, 2.0, 2.0, 6.0]]))  # bow-tie
        poly_cases.append((h, w, [[-3.7, -2.2, 3.3, -1.0, 0.4, 5.6], [w - 2.5, h - 1.5, w + 3.0, h - 1.0, w - 1.0, h + 4.0]]))
        poly_cases.append((h, w, [[0.5, 0.5, 1.5, 0.5, 1.0, 1.4]]))  # tiny
        poly_cases.append((h, w, [[0.0, 1.0, w - 1.0, 1.2, w - 1.0, 1.9, 0.0, 1.7, 0.3, 1.5]]))  # thin
    for h, w, parts in poly_cases:
        rles = mask_utils.frPyObjects(parts, h, w)
        rle = mask_utils.merge(rles)
        res["polygons"].append({
            "h": h, "w": w, "polygons": parts,
            "parts": [rle_str(r) for r in rles],
            "counts": rle_str(rle), "area": int(mask_utils.area(rle)),
            "bbox": [float(v) for v in mask_utils.toBbox(rle)],
        })

    for (h, w) in [(30, 40), (64, 48)]:
        for _ in range(5):
            bb = [float(round(v, 2)) for v in [rng.uniform(-5, w), rng.uniform(-5, h), rng.uniform(0, w), rng.uniform(0, h)]]
            rle = mask_utils.frPyObjects(np.array([bb], dtype=np.double), h, w)[0]
            res["bboxes"].append({"h": h, "w": w, "bbox": bb, "counts": rle_str(rle), "area": int(mask_utils.area(rle))})

    # uncompressed RLE (non-canonical ones too: zero runs in the middle)
    for h, w, counts in [(4, 5, [3, 0, 2, 5, 10]), (4, 5, [0, 20]), (4, 5, [20]), (6, 6, [1, 2, 0, 0, 3, 30]), (3, 3, [9])]:
        rle = mask_utils.frPyObjects({"size": [h, w], "counts": counts}, h, w)
        res["uncompressed"].append({"h": h, "w": w, "counts_list": counts, "counts": rle_str(rle),
                                    "area": int(mask_utils.area(rle)), "rows": rows(mask_utils.decode(rle))})

    # merge (union and intersection) of 1..4 random masks
    for _ in range(12):
        h, w = int(rng.integers(1, 30)), int(rng.integers(1, 30))
        n = int(rng.integers(1, 5))
        ms = [(rng.random((h, w)) < rng.uniform(0.1, 0.9)).astype(np.uint8) for _ in range(n)]
        rl = [mask_utils.encode(fortran(m)) for m in ms]
        res["merge"].append({"h": h, "w": w, "inputs": [rle_str(r) for r in rl],
                             "union": rle_str(mask_utils.merge(rl, intersect=0)),
                             "intersection": rle_str(mask_utils.merge(rl, intersect=1))})

    # iou: dt x gt with crowd flags, overlapping blobs
    for (h, w) in [(40, 50), (64, 48), (9, 9)]:
        dts = [ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, h / 2), rng.uniform(1, w / 2)).astype(np.uint8) for _ in range(5)]
        dts.append(np.zeros((h, w), np.uint8))
        gts = [ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, h / 2), rng.uniform(1, w / 2)).astype(np.uint8) for _ in range(4)]
        gts.append(np.zeros((h, w), np.uint8))
        gts.append(dts[0].copy())
        crowd = [int(v) for v in rng.integers(0, 2, len(gts))]
        d = [mask_utils.encode(fortran(m)) for m in dts]
        g = [mask_utils.encode(fortran(m)) for m in gts]
        iou = np.asarray(mask_utils.iou(d, g, crowd))
        res["iou"].append({"h": h, "w": w, "dt": [rle_str(r) for r in d], "gt": [rle_str(r) for r in g],
                           "iscrowd": crowd, "iou": iou.tolist()})
    with open(os.path.join(out, "rle_ref.json"), "w") as f:
        json.dump(res, f)


# --------------------------------------------------------------------------
# COCO mask AP
# --------------------------------------------------------------------------
def column_major_counts(m):
    flat = np.asarray(m, dtype=np.uint8).reshape(-1, order="F")
    counts, prev, run = [], 0, 0
    for v in flat:
        if v != prev:
            counts.append(run)
            run, prev = 0, v
        run += 1
    counts.append(run)
    return counts


def perturb(rng, m):
    h, w = m.shape
    dy, dx = int(rng.integers(-1, 2)), int(rng.integers(-1, 2))
    out = np.zeros_like(m)
    ys, xs = np.nonzero(m)
    ys, xs = ys + dy, xs + dx
    ok = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    out[ys[ok], xs[ok]] = 1
    k = int(rng.integers(0, 6))
    if k == 1:
        out = cv2.dilate(out, np.ones((3, 3), np.uint8))
    elif k == 2:
        out = cv2.erode(out, np.ones((3, 3), np.uint8))
    return out


def gen_coco(out):
    rng = np.random.default_rng(2)
    d = os.path.join(out, "coco")
    os.makedirs(d, exist_ok=True)
    sizes = [(60, 80), (100, 100), (120, 90), (300, 200), (240, 320), (48, 64)]
    cats = [{"id": 1, "name": "a", "supercategory": "s"}, {"id": 3, "name": "b", "supercategory": "s"},
            {"id": 7, "name": "c", "supercategory": "s"}, {"id": 18, "name": "d", "supercategory": "s"},
            {"id": 25, "name": "no_gt", "supercategory": "s"}]
    cat_ids = [1, 3, 7, 18]
    images, anns, gt_masks = [], [], []
    img_ids = [7, 3, 42, 11, 5, 19, 23, 2, 31, 8]
    ann_id = 1
    for i, iid in enumerate(img_ids):
        h, w = sizes[i % len(sizes)]
        images.append({"id": iid, "height": h, "width": w, "file_name": f"{iid:06d}.jpg"})
        n = int(rng.integers(0, 7)) if i != 4 else 0  # image 5 has no GT
        for _ in range(n):
            cat = int(rng.choice(cat_ids))
            kind = rng.random()
            r = rng.uniform(2, min(h, w) * 0.45) if kind > 0.15 else rng.uniform(1.0, 3.0)  # tiny objects
            parts = [star_polygon(rng, rng.uniform(0, w), rng.uniform(0, h), r, int(rng.integers(3, 10)))]
            if min(h, w) >= 200 and rng.random() < 0.4:  # large object
                parts = [star_polygon(rng, rng.uniform(0.4, 0.6) * w, rng.uniform(0.4, 0.6) * h, 0.45 * min(h, w), 24, 0.85)]
            if rng.random() < 0.25:
                parts.append(star_polygon(rng, rng.uniform(0, w), rng.uniform(0, h), r * 0.5, int(rng.integers(3, 8))))
            rle = mask_utils.merge(mask_utils.frPyObjects(parts, h, w))
            area = float(mask_utils.area(rle))
            if rng.random() < 0.2:  # the area field is what COCOeval uses, not the mask's pixel count
                area = float(rng.choice([1023.5, 1024.0, 1025.0, 9215.0, 9216.5, 500.0, 20000.0]))
            ann = {"id": ann_id, "image_id": iid, "category_id": cat, "segmentation": parts, "area": area,
                   "bbox": [float(v) for v in mask_utils.toBbox(rle)], "iscrowd": 0}
            if rng.random() < 0.1:  # compressed-RLE ground truth (LVIS style)
                ann["segmentation"] = {"size": [h, w], "counts": rle_str(rle)}
            anns.append(ann)
            gt_masks.append((iid, cat, mask_utils.decode(rle)))
            ann_id += 1
        if rng.random() < 0.5 and i != 4:  # crowd region, uncompressed RLE
            cat = int(rng.choice(cat_ids))
            m = ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(5, h / 2), rng.uniform(5, w / 2)).astype(np.uint8)
            anns.append({"id": ann_id, "image_id": iid, "category_id": cat,
                         "segmentation": {"size": [h, w], "counts": column_major_counts(m)},
                         "area": float(m.sum()), "bbox": [0.0, 0.0, float(w), float(h)], "iscrowd": 1})
            gt_masks.append((iid, cat, m))
            ann_id += 1
    gt = {"info": {"description": "synthetic"}, "images": images, "annotations": anns, "categories": cats}
    with open(os.path.join(d, "gt.json"), "w") as f:
        json.dump(gt, f)
    size_of = {im["id"]: (im["height"], im["width"]) for im in images}

    dets = []
    for iid, cat, m in gt_masks:
        if rng.random() < 0.8:
            dets.append((iid, cat, perturb(rng, m), float(round(rng.uniform(0.3, 1.0), 2))))
        if rng.random() < 0.3:  # duplicate, lower score
            dets.append((iid, cat, perturb(rng, m), float(round(rng.uniform(0.0, 0.5), 2))))
        if rng.random() < 0.1:  # wrong class
            dets.append((iid, int(rng.choice([1, 3, 7, 18, 25])), perturb(rng, m), float(round(rng.uniform(0, 1), 1))))
    for iid in img_ids:
        h, w = size_of[iid]
        for _ in range(int(rng.integers(0, 6))):  # false positives, some tiny
            m = ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(0.5, h / 3), rng.uniform(0.5, w / 3)).astype(np.uint8)
            dets.append((iid, int(rng.choice([1, 3, 7, 18, 25])), m, float(round(rng.uniform(0, 1), 1))))
        if rng.random() < 0.3:  # empty mask detection
            dets.append((iid, int(rng.choice(cat_ids)), np.zeros((h, w), np.uint8), 0.5))
    # one image with > 100 detections (maxDets truncation), many tied scores
    iid = 3
    h, w = size_of[iid]
    for _ in range(130):
        m = ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, h / 3), rng.uniform(2, w / 3)).astype(np.uint8)
        dets.append((iid, int(rng.choice(cat_ids)), m, float(round(rng.uniform(0, 0.4), 1))))
    order = rng.permutation(len(dets))
    dets = [dets[i] for i in order]

    res_plain, res_bbox = [], []
    for iid, cat, m, score in dets:
        rle = mask_utils.encode(fortran(m))
        seg = {"size": [int(m.shape[0]), int(m.shape[1])], "counts": rle_str(rle)}
        res_plain.append({"image_id": iid, "category_id": cat, "segmentation": seg, "score": score})
        bb = [float(v) for v in mask_utils.toBbox(rle)]
        if rng.random() < 0.3:  # a loose box: area taken from the bbox, not the mask
            bb = [bb[0], bb[1], bb[2] + float(rng.integers(0, 30)), bb[3] + float(rng.integers(0, 30))]
        res_bbox.append({"image_id": iid, "category_id": cat, "segmentation": seg, "bbox": bb, "score": score})
    with open(os.path.join(d, "res_segm.json"), "w") as f:
        json.dump(res_plain, f)
    with open(os.path.join(d, "res_with_bbox.json"), "w") as f:
        json.dump(res_bbox, f)

    ref = {}
    keys = ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"]
    for name in ["res_segm", "res_with_bbox"]:
        coco_gt = COCO(os.path.join(d, "gt.json"))
        coco_dt = coco_gt.loadRes(os.path.join(d, name + ".json"))
        ev = COCOeval(coco_gt, coco_dt, "segm")
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
        ref[name] = {k: float(v) for k, v in zip(keys, ev.stats)}
        # per (iou thr, category, area, maxdet) max recall: a finer check than the summary
        ref[name]["recall"] = ev.eval["recall"].tolist()
        ref[name]["precision_sum"] = float(ev.eval["precision"].sum())
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(ref, f, indent=1)


# --------------------------------------------------------------------------
# COCO panoptic PQ
# --------------------------------------------------------------------------
def id2rgb(idmap):
    rgb = np.zeros(idmap.shape + (3,), np.uint8)
    rgb[..., 0] = idmap % 256
    rgb[..., 1] = (idmap // 256) % 256
    rgb[..., 2] = idmap // (256 * 256)
    return rgb


def gen_panoptic(out):
    sys.path.insert(0, os.environ["PANOPTICAPI"])
    from panopticapi.evaluation import pq_compute

    rng = np.random.default_rng(3)
    d = os.path.join(out, "panoptic")
    if os.path.exists(d):
        shutil.rmtree(d)
    os.makedirs(os.path.join(d, "gt"))
    os.makedirs(os.path.join(d, "pred"))
    cats = [{"id": 1, "name": "person", "isthing": 1, "color": [220, 20, 60]},
            {"id": 2, "name": "car", "isthing": 1, "color": [0, 0, 142]},
            {"id": 5, "name": "dog", "isthing": 1, "color": [20, 200, 20]},
            {"id": 40, "name": "sky", "isthing": 0, "color": [70, 130, 180]},
            {"id": 41, "name": "road", "isthing": 0, "color": [128, 64, 128]},
            {"id": 44, "name": "unused-stuff", "isthing": 0, "color": [1, 2, 3]}]
    images, gt_anns, pred_anns = [], [], []
    used_ids = set()

    def new_id():
        while True:
            v = int(rng.integers(1, 256 ** 3))
            if v not in used_ids:
                used_ids.add(v)
                return v

    sizes = [(48, 64), (60, 80), (64, 48), (120, 160), (50, 50), (90, 70), (33, 47)]
    for i, (h, w) in enumerate(sizes):
        iid = 100 + i
        fname = f"img{iid}.png"
        images.append({"id": iid, "height": h, "width": w, "file_name": f"img{iid}.jpg"})
        gt = np.zeros((h, w), np.int64)
        segs = []
        # stuff: sky on top, road at the bottom
        split = int(h * rng.uniform(0.3, 0.6))
        sid = new_id(); gt[:split] = sid; segs.append([sid, 40, 0])
        rid = new_id(); gt[split:] = rid; segs.append([rid, 41, 0])
        inst = []
        for _ in range(int(rng.integers(1, 5))):
            m = ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(2, h / 3), rng.uniform(2, w / 3))
            tid = new_id()
            cat = int(rng.choice([1, 2, 5]))
            crowd = 1 if rng.random() < 0.2 else 0
            gt[m] = tid
            segs.append([tid, cat, crowd])
            inst.append((tid, cat, crowd))
        # void: a random band and the object borders of the first instance
        if rng.random() < 0.7:
            y0 = int(rng.integers(0, h - 3))
            gt[y0:y0 + 3, : w // 2] = 0
        gt_segments = []
        for sid_, cat, crowd in segs:
            area = int((gt == sid_).sum())
            if area == 0:
                continue
            gt_segments.append({"id": sid_, "category_id": cat, "iscrowd": crowd, "area": area,
                                "bbox": [0, 0, 1, 1]})
        if i == 2:  # segment listed in JSON, absent from the PNG: counts as a false negative
            gt_segments.append({"id": new_id(), "category_id": 2, "iscrowd": 0, "area": 37, "bbox": [0, 0, 1, 1]})
        if i == 3 and gt_segments:  # JSON area that differs from the pixel count: panopticapi uses the JSON
            gt_segments[0]["area"] += 7
        Image.fromarray(id2rgb(gt)).save(os.path.join(d, "gt", fname))
        gt_anns.append({"image_id": iid, "file_name": fname, "segments_info": gt_segments})

        # prediction: shifted copy with relabelled ids, plus extra segments
        pred = np.zeros((h, w), np.int64)
        pred_segments = []
        dy, dx = int(rng.integers(-2, 3)), int(rng.integers(-2, 3))
        shifted = np.roll(np.roll(gt, dy, 0), dx, 1)
        for seg in gt_segments:
            if rng.random() < 0.15:
                continue  # missed
            m = shifted == seg["id"]
            if m.sum() == 0:
                continue
            pid = new_id()
            cat = seg["category_id"]
            if rng.random() < 0.1:
                cat = int(rng.choice([1, 2, 5, 40, 41]))
            pred[m] = pid
            pred_segments.append({"id": pid, "category_id": cat})
        # a false positive lying mostly on void / crowd, and a plain false positive
        for _ in range(int(rng.integers(1, 3))):
            m = ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, h / 5), rng.uniform(1, w / 5))
            pid = new_id()
            pred[m] = pid
            pred_segments.append({"id": pid, "category_id": int(rng.choice([1, 2, 5, 40, 41]))})
        for tid, cat, crowd in inst:
            if crowd:
                m = np.roll(gt == tid, 1, 0)
                pid = new_id()
                pred[m] = pid
                pred_segments.append({"id": pid, "category_id": cat})
        present = set(np.unique(pred).tolist())
        pred_segments = [s for s in pred_segments if s["id"] in present]
        Image.fromarray(id2rgb(pred)).save(os.path.join(d, "pred", fname))
        pred_anns.append({"image_id": iid, "file_name": fname, "segments_info": pred_segments})

    with open(os.path.join(d, "gt.json"), "w") as f:
        json.dump({"images": images, "annotations": gt_anns, "categories": cats}, f)
    with open(os.path.join(d, "pred.json"), "w") as f:
        json.dump({"annotations": pred_anns}, f)
    res = pq_compute(os.path.join(d, "gt.json"), os.path.join(d, "pred.json"),
                     os.path.join(d, "gt"), os.path.join(d, "pred"))
    res["per_class"] = {str(k): v for k, v in res["per_class"].items()}
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(res, f, indent=1, default=float)


# --------------------------------------------------------------------------
# DAVIS 2017 semi-supervised
# --------------------------------------------------------------------------
def davis_palette():
    pal = []
    for i in range(256):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        pal += [r, g, b]
    return pal


def save_indexed(arr, path):
    img = Image.fromarray(arr.astype(np.uint8))  # mode L
    img.putpalette(davis_palette())  # -> mode P, indices kept (as davis2017's save_mask does)
    img.save(path)


def gen_davis(out):
    sys.path.insert(0, os.environ["DAVIS2017_EVAL"])
    from davis2017.evaluation import DAVISEvaluation
    from davis2017.davis import DAVIS
    from davis2017.results import Results

    rng = np.random.default_rng(4)
    d = os.path.join(out, "davis")
    if os.path.exists(d):
        shutil.rmtree(d)
    gt_root = os.path.join(d, "gt")
    pred_root = os.path.join(d, "pred")
    os.makedirs(os.path.join(gt_root, "ImageSets", "2017"))

    # name, (h, w), frames, first-frame object ids, extra behaviour
    seqs = [
        ("multi3", (480, 854), 8, [1, 2, 3], "void_absent"),
        ("gap-ids", (480, 854), 6, [1, 3], "late_object"),
        ("small", (90, 120), 5, [1], "pred_empty"),
        ("three-frames", (480, 854), 3, [1, 2], ""),
        ("tiny-objects", (100, 200), 30, [1, 2], "tiny"),
        ("long", (12, 16), 260, [1], ""),
    ]
    with open(os.path.join(gt_root, "ImageSets", "2017", "val.txt"), "w") as f:
        for name, *_ in seqs:
            if name != "long":
                f.write(name + "\n")
    with open(os.path.join(gt_root, "ImageSets", "2017", "train.txt"), "w") as f:
        f.write("long\n")
    for name, (h, w), n, ids, extra in seqs:
        gdir = os.path.join(gt_root, "Annotations", "480p", name)
        pdir = os.path.join(pred_root, name)
        os.makedirs(gdir)
        os.makedirs(pdir)
        objs = {}
        for oid in ids + ([4] if extra == "late_object" else []):
            tiny = extra == "tiny" and oid == 2
            objs[oid] = dict(cy=rng.uniform(0.2, 0.8) * h, cx=rng.uniform(0.2, 0.8) * w,
                             ry=(rng.uniform(0.6, 2.0) if tiny else rng.uniform(0.08, 0.3) * h),
                             rx=(rng.uniform(0.6, 2.0) if tiny else rng.uniform(0.05, 0.2) * w),
                             vy=rng.uniform(-0.02, 0.02) * h, vx=rng.uniform(-0.02, 0.02) * w, a=rng.uniform(0, 3))
        for t in range(n):
            gt = np.zeros((h, w), np.uint8)
            pred = np.zeros((h, w), np.uint8)
            for oid, o in objs.items():
                if extra == "late_object" and oid == 4 and t < 2:
                    continue
                if extra == "void_absent" and oid == 2 and 3 <= t <= 5:
                    continue  # object absent in some frames
                cy, cx = o["cy"] + o["vy"] * t, o["cx"] + o["vx"] * t
                m = ellipse(h, w, cy, cx, o["ry"], o["rx"], o["a"] + 0.05 * t)
                gt[m] = oid
                if extra == "pred_empty" and t % 2 == 1:
                    continue
                if oid == 4:
                    continue
                if rng.random() < 0.1:
                    continue  # object missed in this frame
                jit = rng.normal(0, 0.02 * max(h, w) / 10 + 0.5, 4)
                pm = ellipse(h, w, cy + jit[0], cx + jit[1], o["ry"] * (1 + 0.1 * jit[2] / 3), o["rx"] * (1 + 0.1 * jit[3] / 3), o["a"] + 0.05 * t + 0.05 * jit[0])
                pred[pm] = oid
            if extra == "void_absent":
                # DAVIS-style void ring around objects (ignored? the official code says no: 255 -> background)
                obj = (gt > 0).astype(np.uint8)
                ring = cv2.dilate(obj, np.ones((5, 5), np.uint8)) > obj
                gt[ring] = 255
                # speckle noise in the prediction
                noise = rng.random((h, w)) < 0.001
                pred[noise] = rng.integers(1, len(ids) + 1, noise.sum())
            if name == "long":
                Image.fromarray(gt).save(os.path.join(gdir, f"{t:05d}.png"))  # grayscale GT
            else:
                save_indexed(gt, os.path.join(gdir, f"{t:05d}.png"))
            # predictions: indexed PNGs, one sequence as plain grayscale
            if name == "small":
                Image.fromarray(pred).save(os.path.join(pdir, f"{t:05d}.png"))
            else:
                save_indexed(pred, os.path.join(pdir, f"{t:05d}.png"))

    def nan_to_none(v):
        v = float(v)
        return None if np.isnan(v) else v

    ref = {}
    for subset in ["val", "train"]:
        ev = DAVISEvaluation(davis_root=gt_root, task="semi-supervised", gt_set=subset, codalab=True)
        m = ev.evaluate(pred_root)
        J, F = m["J"], m["F"]
        r = {
            "J&F-Mean": nan_to_none((np.mean(J["M"]) + np.mean(F["M"])) / 2.0),
            "J-Mean": nan_to_none(np.mean(J["M"])), "J-Recall": nan_to_none(np.mean(J["R"])), "J-Decay": nan_to_none(np.mean(J["D"])),
            "F-Mean": nan_to_none(np.mean(F["M"])), "F-Recall": nan_to_none(np.mean(F["R"])), "F-Decay": nan_to_none(np.mean(F["D"])),
            "per_object": {k: {"J-Mean": nan_to_none(J["M_per_object"][k]), "F-Mean": nan_to_none(F["M_per_object"][k])} for k in J["M_per_object"]},
        }
        # per-frame values, from the official functions, for finer-grained tests
        dataset = DAVIS(root=gt_root, task="semi-supervised", subset=subset, codalab=True)
        results = Results(root_dir=pred_root)
        frames = {}
        for seq in dataset.get_sequences():
            all_gt, all_void, ids_ = dataset.get_all_masks(seq, True)
            all_gt, ids_ = all_gt[:, 1:-1], ids_[1:-1]
            all_res = results.read_masks(seq, ids_)
            jr, fr = DAVISEvaluation._evaluate_semisupervised(all_gt, all_res, None, ("J", "F"))
            for k in range(jr.shape[0]):
                frames[f"{seq}_{k + 1}"] = {"J": jr[k].tolist(), "F": fr[k].tolist()}
        r["per_frame"] = frames
        ref[subset] = r
    with open(os.path.join(d, "ref.json"), "w") as f:
        json.dump(ref, f, indent=1, allow_nan=False)


# --------------------------------------------------------------------------
# Interactive protocol (RITM / SimpleClick)
# --------------------------------------------------------------------------
class ScriptedPredictor:
    """A deterministic stand-in for a click-based model (mirrored in tests/interactive.rs).

    State: the previous probabilities (passed back as 'low-res logits'). For the *last* click
    only: a positive click sets pixels within radius R_POS to 0.9 where the predictor's own
    belief mask holds (else 0.3), a negative click sets pixels within R_NEG to 0.1. Pixels at
    exactly the radius get float32(0.49), which the > 0.49 rule must keep as background.
    """
    R_POS, R_NEG = 14, 5

    def __init__(self, belief):
        self.belief = belief
        self.prev = None

    def set_input_image(self, image):
        self.prev = None

    def get_prediction(self, clicker):
        h, w = self.belief.shape
        probs = np.full((h, w), 0.25, np.float32) if self.prev is None else self.prev.copy()
        click = clicker.clicks_list[-1]
        cy, cx = int(click.coords[0]), int(click.coords[1])
        yy, xx = np.mgrid[0:h, 0:w]
        d2 = (yy - cy) ** 2 + (xx - cx) ** 2
        if click.is_positive:
            r2 = self.R_POS ** 2
            inside = d2 < r2
            probs[inside & self.belief] = np.float32(0.9)
            probs[inside & ~self.belief] = np.float32(0.3)
        else:
            r2 = self.R_NEG ** 2
            inside = d2 < r2
            probs[inside] = np.float32(0.1)
        probs[d2 == r2] = np.float32(0.49)
        self.prev = probs
        return probs


def gen_interactive(out):
    sys.path.insert(0, os.environ["RITM"])
    # evaluation.py / utils.py import torch and the dataset zoo at module level; the functions
    # used here need neither, so stub those imports.
    torch = types.ModuleType("torch")

    class _NoGrad:
        def __enter__(self):
            return None

        def __exit__(self, *a):
            return False

    torch.no_grad = _NoGrad
    sys.modules["torch"] = torch
    for mod, names in [("isegm.data.datasets", ["GrabCutDataset", "BerkeleyDataset", "DavisDataset", "SBDEvaluationDataset", "PascalVocDataset"]),
                       ("isegm.utils.serialization", ["load_model"])]:
        m = types.ModuleType(mod)
        for nm in names:
            setattr(m, nm, None)
        sys.modules[mod] = m
    if not hasattr(np, "int"):
        np.int = int  # RITM's compute_noc_metric uses the removed alias
    if not hasattr(np, "bool"):
        np.bool = bool
    from isegm.inference.clicker import Clicker
    from isegm.inference.evaluation import evaluate_sample
    from isegm.inference import utils as ritm_utils

    # OpenCV routes cv2.distanceTransform(DIST_L2, 0) to Intel IPP for images under 2**14
    # pixels (or when single-threaded); IPP's float arithmetic is off by an ulp here and there.
    # Larger images -- every image of the interactive benchmarks -- take OpenCV's own exact
    # algorithm. The small synthetic samples below therefore run with IPP disabled, so that
    # they exercise the code path real evaluations take; one large case checks the default.
    cv2.ipp.setUseIPP(False)
    rng = np.random.default_rng(5)
    samples = []
    for i in range(8):
        h, w = [(40, 50), (64, 48), (30, 30), (50, 70)][i % 4]
        gt = np.zeros((h, w), np.int32)
        for _ in range(int(rng.integers(1, 3))):
            gt[ellipse(h, w, rng.uniform(0.3, 0.7) * h, rng.uniform(0.3, 0.7) * w, rng.uniform(0.1, 0.3) * h, rng.uniform(0.1, 0.3) * w, rng.uniform(0, 3))] = 1
        if i % 3 == 2:  # ignore region (RITM ignore_label = -1)
            y0 = int(rng.integers(0, h - 6))
            gt[y0:y0 + 5, :] = np.where(gt[y0:y0 + 5, :] == 1, -1, gt[y0:y0 + 5, :])
        # the predictor's belief: the GT shifted and with a hole / an extra blob
        shift = [(0, 0), (0, 1), (1, 0), (1, 1), (0, 0), (2, 0), (0, 0), (1, -1)][i]
        belief = np.roll(gt == 1, shift, (0, 1))
        if i % 2 == 0:
            belief &= ~ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), 2, 3)
        else:
            belief |= ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), 2, 3)
        samples.append((gt, belief))

    runs = {}
    for target in [1.01, 0.90]:
        all_ious, all_clicks = [], []
        for gt, belief in samples:
            pred = ScriptedPredictor(belief)
            clicks, ious, _ = evaluate_sample(np.zeros(gt.shape + (3,), np.uint8), gt, pred, max_iou_thr=target,
                                              pred_thr=0.49, min_clicks=1, max_clicks=20)
            all_ious.append(ious)
            all_clicks.append([[int(c.coords[0]), int(c.coords[1]), bool(c.is_positive)] for c in clicks])
        noc, over = ritm_utils.compute_noc_metric(all_ious, iou_thrs=[0.85, 0.90], max_clicks=20)
        min_len = min(len(x) for x in all_ious)
        miou = np.array([x[:min_len] for x in all_ious]).mean(axis=0)
        runs[str(target)] = {
            "ious": [[float(v) for v in x] for x in all_ious],
            "clicks": all_clicks,
            "noc85": float(noc[0]), "noc90": float(noc[1]),
            "over_max85": int(over[0]), "over_max90": int(over[1]),
            "miou": [float(v) for v in miou],
        }

    # next-click rule on random error maps, and exact distance transforms
    next_clicks, dts = [], []
    for _ in range(40):
        h, w = int(rng.integers(1, 40)), int(rng.integers(1, 40))
        gt = (rng.random((h, w)) < rng.uniform(0.2, 0.8)).astype(np.int32)
        if rng.random() < 0.5:
            gt = ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, h), rng.uniform(1, w)).astype(np.int32)
        if rng.random() < 0.3:
            gt[rng.random((h, w)) < 0.1] = -1
        pred = rng.random((h, w)) < rng.uniform(0.0, 1.0)
        if rng.random() < 0.3:
            pred = ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, h), rng.uniform(1, w))
        clicker = Clicker(gt_mask=gt)
        prior = []
        for _ in range(int(rng.integers(0, 4))):
            clicker.make_next_click(pred)
            c = clicker.clicks_list[-1]
            prior.append([int(c.coords[0]), int(c.coords[1]), bool(c.is_positive)])
        c = clicker._get_next_click(pred)
        next_clicks.append({"h": h, "w": w, "gt": [[int(v) for v in r] for r in gt], "pred": rows(pred),
                            "prior": prior, "next": [int(c.coords[0]), int(c.coords[1]), bool(c.is_positive)]})
    for _ in range(30):
        h, w = int(rng.integers(1, 50)), int(rng.integers(1, 50))
        m = (rng.random((h, w)) < rng.uniform(0.5, 1.0)).astype(np.uint8)
        if rng.random() < 0.5:
            m = ellipse(h, w, rng.uniform(0, h), rng.uniform(0, w), rng.uniform(1, h), rng.uniform(1, w)).astype(np.uint8)
        p = np.pad(m, ((1, 1), (1, 1)), "constant")
        dt = cv2.distanceTransform(p, cv2.DIST_L2, 0)[1:-1, 1:-1]
        dts.append({"h": h, "w": w, "mask": rows(m), "dt": [float(v) for v in dt.reshape(-1)]})
    cv2.ipp.setUseIPP(True)
    h, w = 130, 126  # (h + 2) * (w + 2) >= 2**14: OpenCV's own algorithm even with IPP enabled
    m = ellipse(h, w, 60, 70, 55, 50, 0.3).astype(np.uint8)
    m[rng.random((h, w)) < 0.02] = 0
    dt = cv2.distanceTransform(np.pad(m, ((1, 1), (1, 1)), "constant"), cv2.DIST_L2, 0)[1:-1, 1:-1]
    dts.append({"h": h, "w": w, "mask": rows(m), "dt": [float(v) for v in dt.reshape(-1)]})
    with open(os.path.join(out, "interactive", "ref.json"), "w") as f:
        json.dump({"samples": [{"gt": [[int(v) for v in r] for r in gt], "belief": rows(b)} for gt, b in samples],
                   "runs": runs, "next_clicks": next_clicks, "distance_transforms": dts}, f)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--only", nargs="*", default=["rle", "coco", "panoptic", "davis", "interactive"])
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    os.makedirs(os.path.join(args.out, "interactive"), exist_ok=True)
    for part in args.only:
        print(f"== {part}", file=sys.stderr)
        globals()[f"gen_{part}"](args.out)


if __name__ == "__main__":
    main()
