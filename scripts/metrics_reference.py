"""scikit-learn's image metrics on random, tied and degenerate inputs, for kanoclip's
metrics tests. Pixel cases quantise scores to the bin centres kanoclip's streaming
histogram uses (65536 bins over [0, 1]), where both must agree exactly."""
import json
import os

import numpy as np
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score

BINS = 1 << 16


def f1_max(y, s):
    p, r, _ = precision_recall_curve(y, s)
    f1 = 2 * p * r / (p + r)
    return float(np.max(f1[np.isfinite(f1)]))


def metrics(y, s):
    both = 0 < y.sum() < len(y)
    return {
        "auroc": float(roc_auc_score(y, s)) if both else None,
        "ap": float(average_precision_score(y, s)) if y.sum() > 0 else None,
        "f1_max": f1_max(y, s) if y.sum() > 0 else None,
    }


def write_metrics_cases(out_dir):
    rng = np.random.default_rng(11)
    cases = []
    for n, ties in [(2, None), (7, None), (50, 4), (200, None), (1000, 20), (5000, 100)]:
        y = rng.random(n) < 0.3
        y[0], y[-1] = True, False
        s = rng.random(n) + 0.4 * y
        if ties:
            s = np.round(s * ties) / ties
        s = s.astype(np.float32)
        cases.append({"name": f"n{n}_ties{ties}", "scores": s.tolist(), "labels": y.tolist(), **metrics(y, s)})
    s = np.full(10, 0.5, np.float32)
    y = np.arange(10) % 3 == 0
    cases.append({"name": "all_tied", "scores": s.tolist(), "labels": y.tolist(), **metrics(y, s)})
    y = np.zeros(10, bool)
    cases.append({"name": "no_anomalies", "scores": rng.random(10).astype(np.float32).tolist(), "labels": y.tolist(),
                  "auroc": None, "ap": None, "f1_max": None})
    y = np.ones(10, bool)
    s = rng.random(10).astype(np.float32)
    cases.append({"name": "all_anomalous", "scores": s.tolist(), "labels": y.tolist(), **metrics(y, s)})
    # Pixel maps: scores already on the histogram's bin centres.
    pixel = []
    for k in range(3):
        size = 64
        mask = np.zeros((size, size), bool)
        if k < 2:
            cy, cx, r = rng.integers(10, 54, 2).tolist() + [int(rng.integers(3, 9))]
            yy, xx = np.mgrid[0:size, 0:size]
            mask = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        smap = np.clip(rng.normal(0.3, 0.15, (size, size)) + 0.35 * mask, 0, 1)
        pixel.append({"scores": smap.astype(np.float32).flatten().tolist(), "mask": mask.flatten().tolist()})
    all_s = np.concatenate([np.array(p["scores"], np.float32) for p in pixel])
    all_y = np.concatenate([np.array(p["mask"]) for p in pixel])
    q = ((np.minimum((np.clip(all_s, 0, 1).astype(np.float64) * BINS).astype(np.int64), BINS - 1) + 0.5) / BINS).astype(np.float32)
    expected = metrics(all_y, q)
    with open(os.path.join(out_dir, "metrics_cases.json"), "w") as f:
        json.dump({"generator": "scripts/metrics_reference.py (scikit-learn)", "cases": cases,
                   "pixel": {"maps": pixel, "auroc": expected["auroc"], "ap": expected["ap"]}}, f)


def write_aupro_cases(out_dir):
    """anomalib's AUPRO (8-connected regions, FPR limit, normalised area) on maps with
    several regions per image, regions touching only diagonally, ties, and degenerate
    categories; plus one set quantised to the streaming histogram's bin centres."""
    import torch
    # The torchmetrics class under anomalib's batch-field wrapper `AUPRO`.
    from anomalib.metrics.aupro import _AUPRO as AUPRO

    rng = np.random.default_rng(23)

    def blobs(h, w, k):
        mask = np.zeros((h, w), bool)
        yy, xx = np.mgrid[0:h, 0:w]
        for _ in range(k):
            cy, cx = rng.integers(0, h), rng.integers(0, w)
            ry, rx = rng.integers(1, 7, 2)
            mask |= ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1
        return mask

    def anomalib_aupro(maps, masks, limit):
        metric = AUPRO(fpr_limit=limit)
        metric.update(torch.tensor(np.stack(maps)), torch.tensor(np.stack(masks)).int())
        return float(metric.compute())

    cases = []
    h, w = 40, 48
    for name, n_img, k, ties, limit in [("random", 4, 3, None, 0.3), ("ties", 3, 2, 8, 0.3),
                                        ("many_regions", 2, 12, None, 0.3), ("limit_0.05", 3, 3, None, 0.05),
                                        ("limit_1", 2, 2, None, 1.0), ("quantised", 4, 4, "bins", 0.3)]:
        masks = [blobs(h, w, k) for _ in range(n_img)]
        if name == "random":
            masks.append(np.zeros((h, w), bool))  # a normal image in the category
            # Two regions that touch only at a corner: one region under 8-connectivity.
            d = np.zeros((h, w), bool)
            d[5:9, 5:9] = True
            d[9:12, 9:12] = True
            masks.append(d)
        maps = [np.clip(rng.normal(0.35, 0.15, (h, w)) + 0.3 * m * rng.random(), 0, 1) for m in masks]
        if ties == "bins":
            maps = [(np.minimum((m * BINS).astype(np.int64), BINS - 1) + 0.5) / BINS for m in maps]
        elif ties:
            maps = [np.round(m * ties) / ties for m in maps]
        maps = [m.astype(np.float32) for m in maps]
        masks = [m.astype(bool) for m in masks]
        cases.append({"name": name, "width": w, "limit": limit,
                      "maps": [m.flatten().tolist() for m in maps], "masks": [m.flatten().astype(int).tolist() for m in masks],
                      "aupro": anomalib_aupro(maps, masks, limit)})
    # An all-normal category: anomalib returns 0, kanoclip reports it as undefined.
    maps = [rng.random((h, w)).astype(np.float32) for _ in range(2)]
    masks = [np.zeros((h, w), bool) for _ in range(2)]
    cases.append({"name": "no_regions", "width": w, "limit": 0.3, "maps": [m.flatten().tolist() for m in maps],
                  "masks": [m.flatten().astype(int).tolist() for m in masks],
                  "aupro": None, "anomalib_returns": anomalib_aupro(maps, masks, 0.3)})
    import anomalib
    with open(os.path.join(out_dir, "aupro_cases.json"), "w") as f:
        json.dump({"generator": f"scripts/metrics_reference.py (anomalib {anomalib.__version__} AUPRO)",
                   "cases": cases}, f)


if __name__ == "__main__":
    import sys
    write_aupro_cases(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures")
