"""PyTorch reference for `cargo bench -p fastsam2-train --bench train_speed`: the same training
step (batch 1, box prompt from the mask, 1024 or 256 input, focal x20 + dice + IoU MSE on the
256 x 256 low-res logits, AdamW, global-norm clipping 1.0), timed the same way (median of N
steps after 2 warm-ups, data preparation included).

  python tools/train_refs/bench_torch_train.py [--threads 2] [--steps 10] [NAME ...]

NAME: micro_full_1024, micro_full_256, mobilesam_decoder_1024 (default: all).
Needs torch, segment_anything, mobile_sam, safetensors, Pillow.
"""
import argparse
import glob
import json
import os
import statistics
import time
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors import safe_open

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MEAN = torch.tensor([123.675, 116.28, 103.53]).view(3, 1, 1)
STD = torch.tensor([58.395, 57.12, 57.375]).view(3, 1, 1)


def load_sd(path):
    sd, meta = {}, {}
    with safe_open(path, "pt") as f:
        meta = f.metadata() or {}
        for k in f.keys():
            sd[k] = f.get_tensor(k).float()
    return sd, meta


def resize_pos(sd, cfg, size):
    """Same resizing as fastsam2-train's `model.image_size` (bicubic pos-embed, linear rel-pos)."""
    ie = cfg["image_encoder"]
    g_old, g = ie["img_size"] // ie["patch_size"], size // ie["patch_size"]
    pe = sd["image_encoder.pos_embed"].permute(0, 3, 1, 2)
    sd["image_encoder.pos_embed"] = F.interpolate(pe, size=(g, g), mode="bicubic", align_corners=False).permute(0, 2, 3, 1)
    for i in ie["global_attn_indexes"]:
        for hw in "hw":
            k = f"image_encoder.blocks.{i}.attn.rel_pos_{hw}"
            r = sd[k]
            sd[k] = F.interpolate(r.t()[None], size=2 * g - 1, mode="linear")[0].t()


def build_micro(path, size):
    from segment_anything.modeling import ImageEncoderViT, MaskDecoder, PromptEncoder, Sam, TwoWayTransformer

    sd, meta = load_sd(path)
    cfg = json.loads(meta["fastsam2.config"])
    ie, pe, md = cfg["image_encoder"], cfg["prompt_encoder"], cfg["mask_decoder"]
    if size != ie["img_size"]:
        resize_pos(sd, cfg, size)
    g = size // ie["patch_size"]
    enc = ImageEncoderViT(img_size=size, patch_size=ie["patch_size"], in_chans=3, embed_dim=ie["embed_dim"],
                          depth=ie["depth"], num_heads=ie["num_heads"], mlp_ratio=ie["mlp_ratio"], out_chans=ie["out_chans"],
                          qkv_bias=ie["qkv_bias"], norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), use_abs_pos=ie["use_abs_pos"],
                          use_rel_pos=ie["use_rel_pos"], window_size=ie["window_size"], global_attn_indexes=ie["global_attn_indexes"])
    t = md["transformer"]
    sam = Sam(image_encoder=enc,
              prompt_encoder=PromptEncoder(embed_dim=pe["embed_dim"], image_embedding_size=(g, g),
                                           input_image_size=(size, size), mask_in_chans=pe["mask_in_chans"]),
              mask_decoder=MaskDecoder(num_multimask_outputs=md["num_multimask_outputs"],
                                       transformer=TwoWayTransformer(depth=t["depth"], embedding_dim=t["embedding_dim"],
                                                                     mlp_dim=t["mlp_dim"], num_heads=t["num_heads"]),
                                       transformer_dim=md["transformer_dim"], iou_head_depth=md["iou_head_depth"],
                                       iou_head_hidden_dim=md["iou_head_hidden_dim"]),
              pixel_mean=cfg["pixel_mean"], pixel_std=cfg["pixel_std"])
    sam.load_state_dict(sd)
    return sam


def build_mobilesam(path):
    from mobile_sam import sam_model_registry

    sam = sam_model_registry["vit_t"]()
    sd, _ = load_sd(path)
    sam.load_state_dict(sd, strict=False)
    return sam


def samples():
    imgs = sorted(glob.glob(os.path.join(ROOT, "fixtures/train/shapes/images/*.jpg")))
    out = []
    for p in imgs:
        m = os.path.join(ROOT, "fixtures/train/shapes/masks", os.path.basename(p)[:-4] + ".png")
        out.append((np.asarray(Image.open(p).convert("RGB")), np.asarray(Image.open(m)) > 0))
    return out


def prepare(img, mask, size):
    h, w = mask.shape
    s = size / max(h, w)
    nh, nw = int(h * s + 0.5), int(w * s + 0.5)
    x = torch.from_numpy(np.asarray(Image.fromarray(img).resize((nw, nh), Image.BILINEAR))).permute(2, 0, 1).float()
    x = F.pad((x - MEAN) / STD, (0, size - nw, 0, size - nh))
    m = torch.from_numpy(np.asarray(Image.fromarray(mask.astype(np.uint8) * 255).resize((nw, nh), Image.NEAREST)) > 0).float()
    m = F.pad(m, (0, size - nw, 0, size - nh))
    target = F.avg_pool2d(m[None, None], 4)
    valid = F.pad(torch.ones(1, 1, nh, nw), (0, size - nw, 0, size - nh))
    valid = (F.avg_pool2d(valid, 4) >= 0.5).float()
    ys, xs = np.nonzero(mask)
    box = torch.tensor([[xs.min() * nw / w, ys.min() * nh / h, xs.max() * nw / w, ys.max() * nh / h]], dtype=torch.float32)
    return x[None], target, valid, box


def loss_fn(logits, iou_pred, target, valid):
    n = valid.sum().clamp_min(1)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    a_t = 0.25 * target + 0.75 * (1 - target)
    focal = (ce * (1 - p_t) ** 2 * a_t * valid).sum() / n
    inter = (p * valid * target).sum()
    dice = 1 - (2 * inter + 1) / ((p * valid).sum() + (target * valid).sum() + 1)
    with torch.no_grad():
        pb, tb = (logits > 0) & (valid > 0), (target >= 0.5) & (valid > 0)
        u = (pb | tb).sum()
        real = (pb & tb).sum() / u if u > 0 else torch.tensor(1.0)
    return 20 * focal + dice + ((iou_pred[:, 0] - real) ** 2).mean()


def bench(name, sam, size, freeze_encoder, steps, data):
    sam.train()
    for p in sam.prompt_encoder.parameters():
        p.requires_grad_(False)
    if freeze_encoder:
        sam.image_encoder.eval()
        for p in sam.image_encoder.parameters():
            p.requires_grad_(False)
    params = [p for p in sam.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01)
    times = []
    for i in range(steps + 2):
        img, mask = data[i % len(data)]
        t0 = time.perf_counter()
        x, target, valid, box = prepare(img, mask, size)
        if freeze_encoder:
            with torch.no_grad():
                emb = sam.image_encoder(x)
        else:
            emb = sam.image_encoder(x)
        sparse, dense = sam.prompt_encoder(points=None, boxes=box, masks=None)
        low, iou = sam.mask_decoder(image_embeddings=emb, image_pe=sam.prompt_encoder.get_dense_pe(),
                                    sparse_prompt_embeddings=sparse, dense_prompt_embeddings=dense, multimask_output=False)
        loss = loss_fn(low, iou, target, valid)
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    frac = sum(p.numel() for p in params) / sum(p.numel() for p in sam.parameters())
    print(f"{name:24} median {med * 1e3:8.1f} ms/step  {1 / med:7.2f} steps/s  (min {min(times) * 1e3:.1f} ms, "
          f"max {max(times) * 1e3:.1f} ms, {steps} steps, {100 * frac:.2f} % of parameters trained)")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--mobilesam", default=os.environ.get("FASTSAM2_MOBILESAM", "/tmp/full/mobilesam_vit_t/weights.safetensors"))
    ap.add_argument("names", nargs="*")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    data = samples()[:24]
    micro = os.path.join(ROOT, "fixtures/sam_vit_micro/weights.safetensors")
    want = lambda n: not a.names or n in a.names
    if want("micro_full_1024"):
        bench("micro_full_1024", build_micro(micro, 1024), 1024, False, a.steps, data)
    if want("micro_full_256"):
        bench("micro_full_256", build_micro(micro, 256), 256, False, a.steps, data)
    if want("mobilesam_decoder_1024"):
        if os.path.exists(a.mobilesam):
            bench("mobilesam_decoder_1024", build_mobilesam(a.mobilesam), 1024, True, a.steps, data)
        else:
            print(f"mobilesam_decoder_1024: skipped ({a.mobilesam} not found)")


if __name__ == "__main__":
    main()
