#!/usr/bin/env python3
"""Reference of spec §11 (mutual scoring), written from the spec on torch and scipy, to check
kanoclip's mutual map: raw original-path tokens at the taps, a layer norm per image over all
its values, r × r neighbourhood means (r in 1, 3, 5, zero padding counted), each patch's
distance to its nearest patch in every other image (torch.cdist, float64), the mean of the
smallest 30 % of those (at least one), averaged over taps and degrees, divided by √(2W), then
§7's up-sampling and Gaussian.

Uses the tiny fixture model (rebuilt with make_fixtures.build and checked bit for bit against
tests/fixtures/tiny_quickgelu.safetensors), the head and few-shot fixture images and three new
ones. Writes tests/fixtures/mutual_cases.json and tests/fixtures/images/mutual_*.png.
Run: scripts/make-fixtures (the pinned venv). The weights are random.
"""
import json
import math
import os
import sys

import numpy as np
import open_clip
import scipy.ndimage
import torch
import torch.nn.functional as F
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(HERE, "..", "tests", "fixtures")
from make_fixtures import rebuilt_tiny, smooth_image  # noqa: E402

torch.set_grad_enabled(False)
DEGREES = (1, 3, 5)
INTERVAL = 0.3


def raw_taps(model, images, taps):
    """The original path's block outputs at the taps (no ln_post, no projection), patches
    only: plain CLIP blocks, as open_clip runs them."""
    v = model.visual
    x = v.conv1(images)
    b, w, gh, gw = x.shape
    x = x.reshape(b, w, gh * gw).permute(0, 2, 1)
    x = torch.cat([v.class_embedding.reshape(1, 1, w).expand(b, 1, w), x], dim=1)
    assert v.positional_embedding.shape[0] == gh * gw + 1, "the fixture runs at the native size"
    h = v.ln_pre(x + v.positional_embedding)
    out = {}
    for i, blk in enumerate(v.transformer.resblocks):
        h = blk(h)
        if i + 1 in taps:
            out[i + 1] = h[:, 1:]
    return [out[t] for t in taps], gh


def mutual_grid(tap_list, grid):
    """Spec §11 on the patch grid: (N, P), float64."""
    n, p, w = tap_list[0].shape
    k = max(1, math.floor(INTERVAL * (n - 1)))
    total = torch.zeros(n, p, dtype=torch.float64)
    for t in tap_list:
        z = torch.stack([F.layer_norm(t[i], t[i].shape) for i in range(n)]).double()
        for r in DEGREES:
            maps = z.permute(0, 2, 1).reshape(n, w, grid, grid)
            agg = F.avg_pool2d(maps, r, stride=1, padding=r // 2, count_include_pad=True)
            agg = agg.reshape(n, w, p).permute(0, 2, 1)
            for i in range(n):
                d = torch.stack([
                    torch.cdist(agg[i], agg[j], compute_mode="donot_use_mm_for_euclid_dist").min(dim=1).values
                    for j in range(n) if j != i
                ])  # (N − 1, P)
                total[i] += d.sort(dim=0).values[:k].mean(dim=0)
    return total / (len(tap_list) * len(DEGREES)) / math.sqrt(2 * w)


def maps(grid_map, grid, det):
    """§7 steps 2-3 on the mutual map (already a mean over taps): bilinear up-sampling and the
    Gaussian. The fixture images are at the input size, so step 4 is the identity."""
    size = det["input_size"]
    up = F.interpolate(grid_map.reshape(-1, 1, grid, grid), size=(size, size), mode="bilinear",
                       align_corners=False)
    return [scipy.ndimage.gaussian_filter(up[i, 0].numpy(), sigma=det["sigma"]) for i in range(up.shape[0])]


def main():
    model = rebuilt_tiny(OUT)
    with open(os.path.join(OUT, "head_cases.json")) as f:
        det = json.load(f)["detector"]
    with open(os.path.join(OUT, "fewshot_cases.json")) as f:
        few = json.load(f)
    paths = list(few["queries"]) + list(few["references"])
    for i in range(3):
        p = f"images/mutual_{i}.png"
        smooth_image(det["input_size"], 500 + i).save(os.path.join(OUT, p))
        paths.append(p)
    pre = open_clip.image_transform(det["input_size"], is_train=False)
    batch = torch.stack([pre(Image.open(os.path.join(OUT, p)).convert("RGB")) for p in paths])
    taps, grid = raw_taps(model, batch, det["taps"])
    cases = []
    # Eight images (each patch averages its two nearest images) and the smallest group, three
    # (the nearest alone).
    for n in (8, 3):
        g = mutual_grid([t[:n] for t in taps], grid)
        m = maps(g, grid, det)
        cases.append({
            "images": paths[:n],
            "grid": g.float().flatten().tolist(),
            "maps": [x.astype(np.float32).flatten().tolist() for x in m],
            "scores": [float(x.max()) for x in m],
        })
    doc = {"generator": "scripts/mutual_reference.py",
           "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__},
           "note": "random untrained weights: parity only, no detection quality",
           "detector": det, "cases": cases}
    with open(os.path.join(OUT, "mutual_cases.json"), "w") as f:
        json.dump(doc, f)


if __name__ == "__main__":
    main()
