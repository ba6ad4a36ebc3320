#!/usr/bin/env python3
"""Reference of spec §10 (few-shot mode), written from the spec on torch and scipy, to check
kanoclip's reference memory, few-shot map and fused map.

Uses the tiny fixture model (rebuilt with make_fixtures.build and checked bit for bit
against tests/fixtures/tiny_quickgelu.safetensors), the zero-shot results that
head_reference.py stored in head_cases.json, and three new known-good images. Writes
tests/fixtures/fewshot_cases.json and tests/fixtures/images/fewshot_ref_*.png.
Run: scripts/make-fixtures --fewshot (the pinned venv). The weights are random.
"""
import json
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
from make_fixtures import MODELS, rebuilt_tiny, smooth_image, vision_forward  # noqa: E402

torch.set_grad_enabled(False)
PERCENTILE = 99.0
MIN_SCALE = 1e-3


def memory(model, batch, det):
    """Per tap, the L2-normalised patch tokens of the references: (k·N) × D."""
    _, taps = vision_forward(model, batch, det["vv_from"], det["taps"])
    return [F.normalize(t[:, 1:], dim=-1).reshape(-1, t.shape[-1]) for t in taps]


def leave_one_out(mem, k, n):
    """Each reference's few-shot map against the other references (a lone reference: each
    patch against its image's other patches), averaged over taps: (k·N,)."""
    total = torch.zeros(k * n)
    for m in mem:
        sims = m @ m.T
        if k > 1:
            for i in range(k):
                sims[i * n:(i + 1) * n, i * n:(i + 1) * n] = -float("inf")
        else:
            sims.fill_diagonal_(-float("inf"))
        total += (1 - sims.max(dim=1).values) / 2
    return total / len(mem)


def few_shot_map(model, batch, mem, det):
    """Spec §10: per tap min (1 − cos) / 2, up-sampled and summed (§7 step 2), smoothed
    (step 3) and divided by the number of taps, as the zero-shot map."""
    size, taps = det["input_size"], det["taps"]
    grid = size // model.visual.conv1.kernel_size[0]
    _, tap_list = vision_forward(model, batch, det["vv_from"], taps)
    b = batch.shape[0]
    total = torch.zeros(b, 1, size, size)
    for tap, m in zip(tap_list, mem):
        q = F.normalize(tap[:, 1:], dim=-1)
        d = (1 - (q @ m.T).max(dim=-1).values) / 2
        total += F.interpolate(d.reshape(b, 1, grid, grid), size=(size, size), mode="bilinear",
                               align_corners=False)
    return [scipy.ndimage.gaussian_filter(total[i, 0].numpy().astype(np.float64), sigma=det["sigma"]) / len(taps)
            for i in range(b)]


def main():
    cfg = MODELS["tiny_quickgelu"][0]
    model = rebuilt_tiny(OUT)
    with open(os.path.join(OUT, "head_cases.json")) as f:
        head = json.load(f)
    det = head["detector"]
    pre = open_clip.image_transform(det["input_size"], is_train=False)
    refs = []
    for i in range(3):
        p = f"images/fewshot_ref_{i}.png"
        smooth_image(det["input_size"], 300 + i).save(os.path.join(OUT, p))
        refs.append(p)
    ref_batch = torch.stack([pre(Image.open(os.path.join(OUT, p)).convert("RGB")) for p in refs])
    queries = torch.stack([pre(Image.open(os.path.join(OUT, p)).convert("RGB")) for p in head["images"]])
    n = (det["input_size"] // cfg["vision_cfg"]["patch_size"]) ** 2
    cases = []
    for k, weight, normalize in ((3, 0.5, True), (1, 0.3, False)):
        mem = memory(model, ref_batch[:k], det)
        loo = leave_one_out(mem, k, n)
        scale = max(float(np.percentile(loo.numpy().astype(np.float64), PERCENTILE)), MIN_SCALE)
        fs = few_shot_map(model, queries, mem, det)
        fused = {}
        for mode in ("training_free", "trained"):
            out = []
            for i, zs in enumerate(head[mode]["results"]):
                few = fs[i] / scale if normalize else fs[i]
                m = (1 - weight) * np.asarray(zs["map"], np.float64).reshape(fs[i].shape) + weight * few
                p = zs["global_probability"]
                score = det["global_weight"] * p + (1 - det["global_weight"]) * float(m.max())
                out.append({"score": score, "map": m.astype(np.float32).flatten().tolist()})
            fused[mode] = out
        cases.append({
            "k": k, "weight": weight, "normalize": normalize,
            "memory": [m.numpy().tolist() for m in mem],
            "leave_one_out": loo.numpy().tolist(), "scale": scale,
            "few_shot_maps": [m.astype(np.float32).flatten().tolist() for m in fs],
            "fused": fused,
        })
    doc = {"generator": "scripts/fewshot_reference.py",
           "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__},
           "note": "random untrained weights: parity only, no detection quality",
           "references": refs, "queries": head["images"], "detector": det, "cases": cases}
    with open(os.path.join(OUT, "fewshot_cases.json"), "w") as f:
        json.dump(doc, f)


if __name__ == "__main__":
    main()
