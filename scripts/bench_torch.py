"""PyTorch's side of scripts/bench-compare: the same per-image work as kanoclip's
`Detector` (benches/compare.rs) on a ViT-B/16-shaped RANDOM open_clip model at 224:
pre-processing of a 224×224 RGB picture, the spec's CLIP-VV path from block 4 with taps
3, 6, 9, 12 (scripts/make_fixtures.py), a 4-level head with Bi-CMCI and the Conv-Adapter
(scripts/head_reference.py), the maps, σ = 4 smoothing (scipy) and the scores.

    python scripts/bench_torch.py --threads 2 [--device cpu|cuda] [--batches 1,8] [--json FILE] [--round N]

Prints one line per measurement; with --json, appends one JSON line each. The weights are
random: timings, not accuracy.
"""
import argparse
import json
import os
import statistics
import sys
import time

import numpy as np
import open_clip
import scipy.ndimage
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from head_reference import Adapter, XAttn, tap_maps  # noqa: E402
from make_fixtures import vision_forward  # noqa: E402

MEAN = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(3, 1, 1)
STD = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(3, 1, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--json")
    ap.add_argument("--round", type=int, default=1, help="bench-compare's round, recorded")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    g = torch.Generator().manual_seed(111)
    model = open_clip.create_model("ViT-B-16-quickgelu", pretrained=None).eval().to(dev)
    d = model.text_projection.shape[1]
    taps, vv_from, size, grid, tau, sigma = [3, 6, 9, 12], 4, 224, 14, 0.07, 4.0
    bicmci = [[XAttn(d, 4, g).to(dev).eval(), XAttn(d, 4, g).to(dev).eval()] for _ in taps]
    adapter = Adapter(d, d // 4, g).to(dev).eval()
    text = F.normalize(torch.randn(2, d, generator=g), dim=-1).to(dev)
    picture = np.random.default_rng(1).integers(0, 256, (size, size, 3), dtype=np.uint8)

    def detect(pictures):
        # Pre-processing: uint8 HWC → normalised CHW, as kanoclip's for a 224×224 RGB image.
        batch = torch.stack([(torch.from_numpy(p).permute(2, 0, 1).float() / 255 - MEAN) / STD
                             for p in pictures]).to(dev)
        gfeat, tap_list = vision_forward(model, batch, vv_from, taps)
        b = batch.shape[0]
        total = tap_maps(tap_list, text, tau, grid, size, bicmci)
        gg = gfeat + 0.2 * adapter(tap_list[-1][:, 1:], grid)
        probs = (F.normalize(gg, dim=-1) @ text.T / tau).softmax(dim=-1).cpu().numpy()
        maps = total.cpu().numpy()
        out = []
        for i in range(b):
            smooth = scipy.ndimage.gaussian_filter(maps[i, 0], sigma=sigma) / len(taps)
            out.append(0.5 * float(probs[i, 1]) + 0.5 * float(smooth.max()))
        return out

    label = f"torch {torch.__version__} {args.device}"
    with torch.no_grad():
        for b in [int(x) for x in args.batches.split(",")]:
            pictures = [picture] * b
            for _ in range(2):
                detect(pictures)
            times = []
            for _ in range(args.reps):
                t0 = time.perf_counter()
                assert len(detect(pictures)) == b
                times.append(1000 * (time.perf_counter() - t0))
            ms = statistics.median(times)
            print(f"{label} detect batch {b}: {ms:9.1f} ms per call ({ms / b:.1f} ms per image), "
                  f"{args.threads} threads", flush=True)
            if args.json:
                with open(args.json, "a") as f:
                    f.write(json.dumps({"side": "torch", "backend": args.device, "work": "detect",
                                        "batch": b, "threads": args.threads, "round": args.round, "ms": ms}) + "\n")


if __name__ == "__main__":
    main()
