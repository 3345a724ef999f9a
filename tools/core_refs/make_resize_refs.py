#!/usr/bin/env python3
"""Generate reference fixtures for `fastsam2-core`'s image_io / resize / preprocess tests.

Ground truth is whatever the *installed* Pillow / torch / torchvision /
segment-anything / sam2 produce; the versions are recorded in
`crates/fastsam2-core/tests/fixtures/versions.json`.

Usage (from the repository root, with the reference venv active):

    source /tmp/refharness/venv/bin/activate
    python tools/core_refs/make_resize_refs.py

Everything is deterministic (fixed seeds); re-running rewrites the same files
unless a library version changed.  Output layout (all under
`crates/fastsam2-core/tests/fixtures/`):

* `io/`         PNG / JPEG files of every colour type + `<name>.npy`, the
                result of `np.asarray(PIL.Image.open(path).convert("RGB"))`;
                plus deliberately broken files (truncated, random bytes, text,
                empty).  `io/manifest.json` lists them.
* `resize/`     uint8 HWC inputs (`in_*.npy`), Pillow outputs (`pil_*.npy`),
                torchvision antialiased-bilinear float32 CHW outputs
                (`tv_*.npy`); `resize/manifest.json` lists the cases.
* `preprocess/` full SAM v1 (SamPredictor), SAM 2 video-loader and SAM 2
                image-predictor preprocessing: CRC32 of the exact float32
                tensor, per-channel sums and sampled values at 1024, plus a
                few complete small-resolution tensors.

The photo is a crop of `skimage.data.astronaut()` (NASA photograph of Eileen
Collins; scikit-image documents it as "No known copyright restrictions,
released into the public domain").
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

import numpy as np
import PIL
import segment_anything
import skimage
import skimage.data
import torch
import torchvision
from PIL import Image

REPO = Path(__file__).resolve().parents[2]
FIX = REPO / "crates" / "fastsam2-core" / "tests" / "fixtures"


def save_npy(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.ascontiguousarray(arr), allow_pickle=False)


def crc32_of(arr: np.ndarray) -> int:
    """CRC32 (zlib) of the array's C-order little-endian bytes."""
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">":
        a = a.byteswap().view(a.dtype.newbyteorder("<"))
    return zlib.crc32(a.tobytes()) & 0xFFFFFFFF


def photo() -> np.ndarray:
    return skimage.data.astronaut()  # (512, 512, 3) uint8


# --------------------------------------------------------------------------
# Hand-rolled PNG writer: Pillow cannot write 16-bit RGB/RGBA/LA, sub-byte
# gray depths or palette+tRNS exactly as we want them.
# --------------------------------------------------------------------------


def _chunk(tag: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data))
        + tag
        + data
        + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    )


def write_png(
    path: Path,
    samples: np.ndarray,
    color_type: int,
    bit_depth: int,
    plte: bytes | None = None,
    trns: bytes | None = None,
) -> None:
    """samples: (H, W, C) integer array of raw sample values (C per colour type)."""
    h, w = samples.shape[:2]
    rows = []
    for y in range(h):
        row = samples[y].reshape(-1)
        if bit_depth == 16:
            raw = row.astype(">u2").tobytes()
        elif bit_depth == 8:
            raw = row.astype(np.uint8).tobytes()
        else:
            per_byte = 8 // bit_depth
            padded = np.zeros(((len(row) + per_byte - 1) // per_byte) * per_byte, np.uint8)
            padded[: len(row)] = row
            packed = np.zeros(len(padded) // per_byte, np.uint8)
            for i in range(per_byte):
                packed |= (padded[i::per_byte] << (8 - bit_depth * (i + 1))).astype(np.uint8)
            raw = packed.tobytes()
        rows.append(b"\x00" + raw)
    ihdr = struct.pack(">IIBBBBB", w, h, bit_depth, color_type, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr)
    if plte is not None:
        data += _chunk(b"PLTE", plte)
    if trns is not None:
        data += _chunk(b"tRNS", trns)
    data += _chunk(b"IDAT", zlib.compress(b"".join(rows), 9))
    data += _chunk(b"IEND", b"")
    path.write_bytes(data)


def pil_rgb(path: Path) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im.convert("RGB"))


# --------------------------------------------------------------------------
# image_io fixtures
# --------------------------------------------------------------------------


def make_io(rng: np.random.Generator) -> None:
    d = FIX / "io"
    d.mkdir(parents=True, exist_ok=True)
    cases = []
    h, w = 11, 13

    def add(name: str, exact: bool, mode_note: str) -> None:
        p = d / name
        arr = pil_rgb(p)
        with Image.open(p) as im:
            mode = im.mode
        save_npy(d / (p.stem + ".npy"), arr)
        cases.append(
            {"file": name, "expected": p.stem + ".npy", "exact": exact, "pil_mode": mode, "note": mode_note}
        )

    # 8-bit colour types
    write_png(d / "rgb8.png", rng.integers(0, 256, (h, w, 3)), 2, 8)
    add("rgb8.png", True, "RGB 8-bit")
    write_png(d / "rgba8.png", rng.integers(0, 256, (h, w, 4)), 6, 8)
    add("rgba8.png", True, "RGBA 8-bit, alpha dropped (no compositing)")
    write_png(d / "gray8.png", rng.integers(0, 256, (h, w, 1)), 0, 8)
    add("gray8.png", True, "L 8-bit, replicated")
    write_png(d / "graya8.png", rng.integers(0, 256, (h, w, 2)), 4, 8)
    add("graya8.png", True, "LA 8-bit")
    write_png(d / "rgb8_trns.png", rng.integers(0, 256, (h, w, 3)), 2, 8, trns=struct.pack(">HHH", 10, 20, 30))
    add("rgb8_trns.png", True, "RGB 8-bit with tRNS colour key")
    write_png(d / "gray8_trns.png", rng.integers(0, 256, (h, w, 1)), 0, 8, trns=struct.pack(">H", 7))
    add("gray8_trns.png", True, "L 8-bit with tRNS")
    # sub-byte grays
    for bd in (1, 2, 4):
        write_png(d / f"gray{bd}.png", rng.integers(0, 1 << bd, (h, w, 1)), 0, bd)
        add(f"gray{bd}.png", True, f"gray {bd}-bit")
    # palettes
    pal = rng.integers(0, 256, 256 * 3).astype(np.uint8).tobytes()
    write_png(d / "palette8.png", rng.integers(0, 256, (h, w, 1)), 3, 8, plte=pal)
    add("palette8.png", True, "P 8-bit")
    write_png(
        d / "palette8_trns.png",
        rng.integers(0, 256, (h, w, 1)),
        3,
        8,
        plte=pal,
        trns=rng.integers(0, 256, 40).astype(np.uint8).tobytes(),
    )
    add("palette8_trns.png", True, "P 8-bit with tRNS alpha table")
    write_png(d / "palette4.png", rng.integers(0, 16, (h, w, 1)), 3, 4, plte=pal[: 16 * 3])
    add("palette4.png", True, "P 4-bit, 16-entry palette")
    # 16-bit colour types (values chosen to exercise high/low byte handling)
    write_png(d / "rgb16.png", rng.integers(0, 65536, (h, w, 3)), 2, 16)
    add("rgb16.png", True, "RGB 16-bit: Pillow keeps the high byte")
    write_png(d / "rgba16.png", rng.integers(0, 65536, (h, w, 4)), 6, 16)
    add("rgba16.png", True, "RGBA 16-bit")
    write_png(d / "graya16.png", rng.integers(0, 65536, (h, w, 2)), 4, 16)
    add("graya16.png", True, "LA 16-bit")
    g16 = rng.integers(0, 65536, (h, w, 1))
    g16[0, :, 0] = np.arange(w) * 40  # some values <= 255 so the clip is visible
    write_png(d / "gray16.png", g16, 0, 16)
    add("gray16.png", True, "I;16: Pillow clips values > 255 to 255")
    write_png(d / "gray16_trns.png", g16[::-1], 0, 16, trns=struct.pack(">H", int(g16[-1, 0, 0])))
    add("gray16_trns.png", True, "I;16 with tRNS: still clipped, transparency ignored")

    # JPEGs (Pillow/libjpeg-turbo vs zune-jpeg: not bit-exact)
    ph = photo()[40:104, 180:260]  # 64 x 80
    Image.fromarray(ph).save(d / "photo_q90_420.jpg", quality=90)
    add("photo_q90_420.jpg", False, "JPEG 4:2:0 q90")
    Image.fromarray(ph).save(d / "photo_q95_444.jpg", quality=95, subsampling=0)
    add("photo_q95_444.jpg", False, "JPEG 4:4:4 q95")
    Image.fromarray(ph).convert("L").save(d / "photo_gray.jpg", quality=90)
    add("photo_gray.jpg", False, "grayscale JPEG")
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 CW; PIL.Image.open does NOT apply it
    Image.fromarray(ph[:, :48]).save(d / "photo_exif_rot.jpg", quality=90, exif=exif)
    add("photo_exif_rot.jpg", False, "EXIF orientation 6, not applied")

    # broken inputs
    good = (d / "rgb8.png").read_bytes()
    (d / "bad_truncated.png").write_bytes(good[: len(good) // 2])
    jpg = (d / "photo_q90_420.jpg").read_bytes()
    (d / "bad_truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (d / "bad_random.png").write_bytes(rng.integers(0, 256, 512).astype(np.uint8).tobytes())
    (d / "bad_text.png").write_bytes(b"this is not an image, just text renamed to .png\n")
    (d / "bad_empty.png").write_bytes(b"")
    # a valid-signature PNG whose IHDR says 0 x 5 (invalid per spec)
    ihdr = struct.pack(">IIBBBBB", 0, 5, 8, 2, 0, 0, 0)
    (d / "bad_zero_width.png").write_bytes(
        b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", zlib.compress(b"")) + _chunk(b"IEND", b"")
    )
    # a GIF (valid, but not a format we decode)
    Image.fromarray(ph[:8, :8]).save(d / "unsupported.gif")
    for bad in ("bad_truncated.png", "bad_truncated.jpg", "bad_random.png", "bad_text.png", "bad_empty.png", "bad_zero_width.png"):
        try:
            with Image.open(d / bad) as im:
                im.convert("RGB")
            pil = "ok"
        except Exception as e:  # noqa: BLE001 - we only record what PIL says
            pil = f"{type(e).__name__}: {e}"
        print(f"  PIL on {bad}: {pil}")

    (d / "manifest.json").write_text(json.dumps({"cases": cases}, indent=1) + "\n")


# --------------------------------------------------------------------------
# resize fixtures
# --------------------------------------------------------------------------

FILTERS = {
    "box": Image.Resampling.BOX,
    "bilinear": Image.Resampling.BILINEAR,
    "hamming": Image.Resampling.HAMMING,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
}


def to_tensor(img: np.ndarray) -> torch.Tensor:
    return torchvision.transforms.ToTensor()(img)


def tv_resize(t: torch.Tensor, h: int, w: int) -> torch.Tensor:
    # exactly what SAM2Transforms uses: torchvision.transforms.Resize((h, w)) on a float CHW tensor
    return torchvision.transforms.Resize((h, w))(t)


def make_resize(rng: np.random.Generator) -> None:
    d = FIX / "resize"
    d.mkdir(parents=True, exist_ok=True)
    ph = photo()
    inputs = {
        "1x1": rng.integers(0, 256, (1, 1, 3)),
        "1x9": rng.integers(0, 256, (1, 9, 3)),
        "9x1": rng.integers(0, 256, (9, 1, 3)),
        "2x3": rng.integers(0, 256, (2, 3, 3)),
        "13x17": rng.integers(0, 256, (13, 17, 3)),
        "37x53": rng.integers(0, 256, (37, 53, 3)),
        "250x3": rng.integers(0, 256, (250, 3, 3)),
        "3x250": rng.integers(0, 256, (3, 250, 3)),
        "120x160": rng.integers(0, 256, (120, 160, 3)),
        "photo96x128": ph[200:296, 150:278],
        # extreme values (checkerboard 0/255) maximise bicubic/lanczos over/undershoot -> clipping
        "checker20x24": (np.indices((20, 24)).sum(0) % 2 * 255)[..., None].repeat(3, 2),
    }
    for k, v in inputs.items():
        save_npy(d / f"in_{k}.npy", v.astype(np.uint8))

    # (input, out_w, out_h) -- note PIL sizes are (width, height)
    pil_pairs = [
        ("1x1", 1, 1),
        ("1x1", 5, 5),
        ("1x1", 1, 3),
        ("1x1", 17, 1),
        ("1x9", 4, 1),
        ("1x9", 20, 3),
        ("1x9", 9, 2),
        ("9x1", 1, 4),
        ("9x1", 3, 20),
        ("2x3", 1, 1),
        ("2x3", 7, 5),
        ("2x3", 2, 3),
        ("13x17", 9, 5),
        ("13x17", 34, 26),
        ("13x17", 11, 40),
        ("13x17", 13, 17),
        ("13x17", 17, 13),
        ("37x53", 23, 16),
        ("37x53", 71, 100),
        ("37x53", 20, 53),
        ("37x53", 53, 7),
        ("37x53", 54, 36),
        ("250x3", 3, 50),
        ("250x3", 10, 100),
        ("250x3", 1, 1),
        ("250x3", 2, 249),
        ("3x250", 50, 3),
        ("3x250", 100, 10),
        ("120x160", 7, 5),
        ("120x160", 1, 1),
        ("120x160", 159, 119),
        ("120x160", 64, 48),
        ("120x160", 13, 90),
        ("photo96x128", 64, 48),
        ("photo96x128", 101, 77),
        ("photo96x128", 37, 29),
        ("photo96x128", 128, 32),
        ("photo96x128", 40, 96),
        ("photo96x128", 96, 96),
        ("checker20x24", 31, 27),
        ("checker20x24", 9, 7),
    ]
    pil_cases = []
    for name, ow, oh in pil_pairs:
        src = np.load(d / f"in_{name}.npy")
        filters = list(FILTERS) if name in ("13x17", "37x53", "photo96x128", "checker20x24", "250x3") else ["bilinear", "bicubic"]
        for f in filters:
            out = np.asarray(Image.fromarray(src).resize((ow, oh), FILTERS[f]))
            fn = f"pil_{f}_{name}_to_{ow}x{oh}.npy"
            save_npy(d / fn, out)
            pil_cases.append({"input": f"in_{name}.npy", "filter": f, "width": ow, "height": oh, "output": fn})
    # the default filter of Image.resize (used by SAM 2's frame loader) must be BICUBIC
    src = np.load(d / "in_37x53.npy")
    default = np.asarray(Image.fromarray(src).resize((23, 16)))
    bicubic = np.asarray(Image.fromarray(src).resize((23, 16), Image.Resampling.BICUBIC))
    assert np.array_equal(default, bicubic), "Pillow default resize filter is not BICUBIC"

    # torchvision Resize((h, w)) on ToTensor() output (antialiased bilinear, float32)
    tv_pairs = [
        ("1x1", 3, 3),
        ("1x1", 1, 1),
        ("1x9", 1, 4),
        ("1x9", 2, 20),
        ("9x1", 4, 1),
        ("2x3", 5, 7),
        ("13x17", 5, 9),
        ("13x17", 26, 34),
        ("13x17", 13, 40),
        ("13x17", 40, 17),
        ("37x53", 16, 23),
        ("37x53", 60, 80),
        ("37x53", 36, 54),
        ("37x53", 20, 1),
        ("250x3", 50, 3),
        ("3x250", 3, 50),
        ("120x160", 5, 7),
        ("120x160", 1, 1),
        ("120x160", 48, 64),
        ("photo96x128", 64, 64),
        ("photo96x128", 50, 101),
        ("photo96x128", 29, 37),
    ]
    tv_cases = []
    for name, oh, ow in tv_pairs:
        src = np.load(d / f"in_{name}.npy")
        t = to_tensor(src)
        note = None
        if ow == 1 and oh > 1 and oh != t.shape[1]:
            # torch 2.15 CPU bug: when the height pass runs on width-1 data
            # (output width 1), _upsample_bilinear2d_aa replicates output row 0
            # into every row.  Reference = the same resize of the transposed
            # image (whose height pass is then a correct width pass),
            # transposed back.  SAM 2 never hits this (its output is 1024 wide).
            buggy = tv_resize(t, oh, ow)
            out = tv_resize(t.transpose(1, 2), ow, oh).transpose(1, 2).contiguous().numpy()
            assert not np.allclose(buggy.numpy(), out), "torch width-1 bug seems fixed; drop the workaround"
            note = "torch replicates row 0 when the output width is 1; reference via transpose"
        else:
            out = tv_resize(t, oh, ow).numpy().astype(np.float32)
        fn = f"tv_{name}_to_{oh}x{ow}.npy"
        save_npy(d / fn, out)
        case = {"input": f"in_{name}.npy", "height": oh, "width": ow, "output": fn}
        if note:
            case["note"] = note
        tv_cases.append(case)
    # arbitrary float input (not a multiple of 1/255), including negatives and > 1
    fin = rng.standard_normal((2, 19, 23)).astype(np.float32)
    save_npy(d / "in_float_2x19x23.npy", fin)
    float_cases = []
    for oh, ow in [(7, 11), (40, 45), (19, 8), (19, 23)]:
        out = tv_resize(torch.from_numpy(fin), oh, ow).numpy()
        fn = f"tv_float_2x19x23_to_{oh}x{ow}.npy"
        save_npy(d / fn, out)
        float_cases.append({"input": "in_float_2x19x23.npy", "height": oh, "width": ow, "output": fn})

    (d / "manifest.json").write_text(
        json.dumps({"pil": pil_cases, "torchvision": tv_cases, "torchvision_float": float_cases}, indent=1) + "\n"
    )


# --------------------------------------------------------------------------
# full preprocessing fixtures
# --------------------------------------------------------------------------

SAMPLES = 512


def summarize(t: torch.Tensor, rng: np.random.Generator, full: bool = False) -> dict:
    a = t.detach().cpu().numpy().astype(np.float32)
    assert a.ndim == 3, a.shape
    c, h, w = a.shape
    idx = np.stack([rng.integers(0, c, SAMPLES), rng.integers(0, h, SAMPLES), rng.integers(0, w, SAMPLES)], 1)
    out = {
        "shape": [c, h, w],
        "crc32": crc32_of(a),
        "channel_sums": [float(a[i].astype(np.float64).sum()) for i in range(c)],
        "samples": [[int(i), int(j), int(k), float(a[i, j, k])] for i, j, k in idx],
    }
    if full:
        out["full"] = True
    return out


def sam_v1_capture(img: np.ndarray) -> tuple[torch.Tensor, np.ndarray, tuple[int, int]]:
    """Run segment_anything.SamPredictor.set_image, capturing the image encoder's input."""
    from segment_anything import SamPredictor, sam_model_registry

    sam = sam_model_registry["vit_b"](checkpoint=None).eval()
    captured = {}

    def fake_encoder(x: torch.Tensor) -> torch.Tensor:
        captured["x"] = x.clone()
        return torch.zeros(x.shape[0], 256, 64, 64)

    sam.image_encoder.forward = fake_encoder
    pred = SamPredictor(sam)
    pred.set_image(img)
    resized = pred.transform.apply_image(img)
    return captured["x"][0], resized, tuple(pred.input_size)


def make_preprocess(rng: np.random.Generator) -> None:
    from sam2.utils.misc import _load_img_as_tensor
    from sam2.utils.transforms import SAM2Transforms
    from segment_anything.utils.transforms import ResizeLongestSide

    d = FIX / "preprocess"
    d.mkdir(parents=True, exist_ok=True)
    srng = np.random.default_rng(1234)
    ph = photo()
    photo_240x320 = ph[100:340, 120:440]
    Image.fromarray(photo_240x320).save(d / "photo_240x320.png")
    rand_50x37 = rng.integers(0, 256, (50, 37, 3)).astype(np.uint8)  # portrait, odd sizes, upscaled
    Image.fromarray(rand_50x37).save(d / "rand_50x37.png")
    images = {"photo_240x320.png": photo_240x320, "rand_50x37.png": rand_50x37}

    out: dict = {"sam_v1": [], "sam2_video": [], "sam2_image": [], "longest_side": []}

    # ResizeLongestSide.get_preprocess_shape on awkward sizes
    for hh, ww, t in [(240, 320, 1024), (50, 37, 1024), (3000, 4000, 1024), (4000, 3000, 1024), (1, 1, 1024),
                      (333, 1000, 1024), (1000, 333, 1024), (719, 1279, 1024), (7, 3, 64), (481, 1023, 1024)]:
        nh, nw = ResizeLongestSide.get_preprocess_shape(hh, ww, t)
        out["longest_side"].append({"h": hh, "w": ww, "target": t, "new_h": nh, "new_w": nw})

    for fname, img in images.items():
        # SAM v1 via the real SamPredictor
        x, resized, input_size = sam_v1_capture(img)
        s = summarize(x, srng)
        s.update({"file": fname, "target": 1024, "input_size": list(input_size),
                  "resized_crc32": crc32_of(resized), "resized_shape": list(resized.shape)})
        out["sam_v1"].append(s)

        # SAM v1 at a small target (same code path, pieces called directly), full tensor
        t = 48
        rs = ResizeLongestSide(t).apply_image(img)
        xt = torch.as_tensor(rs).permute(2, 0, 1).contiguous()[None]
        mean = torch.tensor([123.675, 116.28, 103.53]).view(-1, 1, 1)
        std = torch.tensor([58.395, 57.12, 57.375]).view(-1, 1, 1)
        xt = (xt - mean) / std
        xt = torch.nn.functional.pad(xt, (0, t - xt.shape[-1], 0, t - xt.shape[-2]))[0]
        fn = f"sam_v1_{Path(fname).stem}_t{t}.npy"
        save_npy(d / fn, xt.numpy())
        out["sam_v1"].append({"file": fname, "target": t, "full": fn, "input_size": list(rs.shape[:2])})

        # SAM 2 video frame loader (sam2.utils.misc): PIL default-filter resize, /255, ImageNet normalise
        for t in (1024, 40):
            frame, vh, vw = _load_img_as_tensor(str(d / fname), t)
            images_t = torch.zeros(1, 3, t, t, dtype=torch.float32)
            images_t[0] = frame
            img_mean = torch.tensor((0.485, 0.456, 0.406), dtype=torch.float32)[:, None, None]
            img_std = torch.tensor((0.229, 0.224, 0.225), dtype=torch.float32)[:, None, None]
            images_t -= img_mean
            images_t /= img_std
            if t == 1024:
                s = summarize(images_t[0], srng)
                s.update({"file": fname, "target": t, "video_hw": [vh, vw]})
            else:
                fn = f"sam2_video_{Path(fname).stem}_t{t}.npy"
                save_npy(d / fn, images_t[0].numpy())
                s = {"file": fname, "target": t, "full": fn, "video_hw": [vh, vw]}
            out["sam2_video"].append(s)

        # SAM 2 image predictor transforms: ToTensor -> Resize((t, t)) -> Normalize
        for t in (1024, 40):
            y = SAM2Transforms(resolution=t, mask_threshold=0.0)(img)
            if t == 1024:
                s = summarize(y, srng)
                s.update({"file": fname, "target": t})
            else:
                fn = f"sam2_image_{Path(fname).stem}_t{t}.npy"
                save_npy(d / fn, y.numpy())
                s = {"file": fname, "target": t, "full": fn}
            out["sam2_image"].append(s)

    # bit-exact uint8 Pillow resizes at 1024 (checksums only)
    out["pil_1024"] = []
    for fname, img in images.items():
        for f in ("bilinear", "bicubic"):
            r = np.asarray(Image.fromarray(img).resize((1024, 1024), FILTERS[f]))
            out["pil_1024"].append({"file": fname, "filter": f, "width": 1024, "height": 1024, "crc32": crc32_of(r)})
        nh, nw = ResizeLongestSide.get_preprocess_shape(img.shape[0], img.shape[1], 1024)
        r = np.asarray(Image.fromarray(img).resize((nw, nh), Image.Resampling.BILINEAR))
        out["pil_1024"].append({"file": fname, "filter": "bilinear", "width": nw, "height": nh, "crc32": crc32_of(r)})

    (d / "manifest.json").write_text(json.dumps(out) + "\n")


def main() -> None:
    rng = np.random.default_rng(20240607)
    print("Pillow", PIL.__version__, "torch", torch.__version__, "torchvision", torchvision.__version__)
    FIX.mkdir(parents=True, exist_ok=True)
    make_io(rng)
    make_resize(rng)
    make_preprocess(rng)
    versions = {
        "pillow": PIL.__version__,
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "numpy": np.__version__,
        "scikit-image": skimage.__version__,
        "segment_anything": getattr(segment_anything, "__version__", "unknown"),
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
    }
    (FIX / "versions.json").write_text(json.dumps(versions, indent=1) + "\n")
    total = sum(p.stat().st_size for p in FIX.rglob("*") if p.is_file())
    print(f"fixtures: {sum(1 for p in FIX.rglob('*') if p.is_file())} files, {total / 1e6:.2f} MB")


if __name__ == "__main__":
    main()
