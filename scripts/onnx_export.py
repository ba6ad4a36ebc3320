"""A ViT-B/16-shaped RANDOM open_clip model (QuickGELU, as OpenAI's weights) and a random
4-level head for the browser comparison (benches/browser.mjs). Writes, into OUT_DIR:

- b16.safetensors, b16_config.json: the CLIP weights (for `kanoclip convert --to web`);
- b16_head.safetensors: a kanoclip head file (format kanoclip-head/1) with the detector's
  B/16 settings: CLIP-VV from block 4, taps 3, 6, 9, 12, τ 0.07, σ 4, global weight 0.5;
- b16_detect.onnx: the SAME per-image work as kanoclip's Detector after pre-processing, as
  one graph: the dual path with its taps (make_fixtures.vision_forward), Bi-CMCI, the maps,
  their up-sampling, the σ = 4 smoothing (scipy's gaussian_filter, as a separable
  convolution with its "reflect" border) and the score, from a normalised [1, 3, 224, 224]
  image; outputs score, global probability and the smoothed map;
- b16_visual.onnx: plain `encode_image` (the earlier, smaller comparison);
- input.bin, expected.json: crack.jpg pre-processed as kanoclip does (little-endian f32)
  and the reference outputs on it, so the bench can check both runtimes ran the same graph.

Every weight is rounded to f16 first, so the f16 bundle and the f32 ONNX graph hold the
same numbers. The weights are random: timings, not accuracy.

    python scripts/onnx_export.py OUT_DIR [IMAGE]   (scripts/make-fixtures' venv, plus
                                                     onnx==1.19.1 and onnxscript)
"""
import json
import os
import sys

import numpy as np
import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import save_file

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from head_reference import Adapter, XAttn, encode_prompts, fingerprint, tap_maps  # noqa: E402
from make_fixtures import vision_forward  # noqa: E402

DET = {"input_size": 224, "vv_from": 4, "taps": [3, 6, 9, 12], "tau": 0.07, "sigma": 4.0,
       "global_weight": 0.5, "threshold": 0.5}
HEAD = {"n_ctx": 12, "deep_len": 4, "deep_blocks": [2, 9], "attn_heads": 4, "adapter_reduction": 4,
        "alpha": 0.2, "levels": 4}


def gaussian_taps(sigma):
    """scipy.ndimage.gaussian_filter's 1-D kernel (truncate 4.0)."""
    r = int(4.0 * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=np.float64)
    k = np.exp(-0.5 * (x / sigma) ** 2)
    return torch.tensor(k / k.sum(), dtype=torch.float32), r


def reflect_pad(x, r, dim):
    """scipy's "reflect" border (d c b a | a b c d), which torch's pad modes lack."""
    n = x.shape[dim]
    left = x.narrow(dim, 0, r).flip(dim)
    right = x.narrow(dim, n - r, r).flip(dim)
    return torch.cat([left, x, right], dim=dim)


class DetectGraph(nn.Module):
    def __init__(self, model, bicmci, adapter, text):
        super().__init__()
        self.model, self.adapter = model, adapter
        self.bicmci = nn.ModuleList([nn.ModuleList(p) for p in bicmci])
        self.register_buffer("text", text)
        k, self.r = gaussian_taps(DET["sigma"])
        self.register_buffer("kx", k.view(1, 1, 1, -1))
        self.register_buffer("ky", k.view(1, 1, -1, 1))

    def forward(self, image):
        size, taps, tau = DET["input_size"], DET["taps"], DET["tau"]
        grid = size // self.model.visual.conv1.kernel_size[0]
        g, tap_list = vision_forward(self.model, image, DET["vv_from"], taps)
        total = tap_maps(tap_list, self.text, tau, grid, size, self.bicmci)
        gg = g + HEAD["alpha"] * self.adapter(tap_list[-1][:, 1:], grid)
        prob = (F.normalize(gg, dim=-1) @ self.text.T / tau).softmax(dim=-1)[:, 1]
        sm = F.conv2d(reflect_pad(total, self.r, 3), self.kx)
        sm = F.conv2d(reflect_pad(sm, self.r, 2), self.ky) / len(taps)
        w = DET["global_weight"]
        score = w * prob + (1 - w) * sm.amax(dim=(1, 2, 3))
        return score, prob, sm


class Visual(nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m.encode_image(x)


def main():
    out = sys.argv[1] if len(sys.argv) > 1 else "b16-random"
    picture = sys.argv[2] if len(sys.argv) > 2 else os.path.join(
        os.path.dirname(__file__), "..", "www", "samples", "hazelnut_toy", "crack.jpg")
    os.makedirs(out, exist_ok=True)
    # nn.MultiheadAttention's fused fast path does not export to ONNX; the math is the same.
    torch.backends.mha.set_fastpath_enabled(False)
    torch.manual_seed(0)
    g = torch.Generator().manual_seed(6)
    name = "ViT-B-16-quickgelu"
    model = open_clip.create_model(name, pretrained=None).eval()
    cfg = open_clip.get_model_config(name)
    d, wt = cfg["embed_dim"], cfg["text_cfg"]["width"]
    bicmci = [(XAttn(d, HEAD["attn_heads"], g), XAttn(d, HEAD["attn_heads"], g)) for _ in DET["taps"]]
    adapter = Adapter(d, d // HEAD["adapter_reduction"], g)
    deep_blocks = list(range(HEAD["deep_blocks"][0], min(HEAD["deep_blocks"][1], cfg["text_cfg"]["layers"]) + 1))
    ctx_n, ctx_a = 0.5 * torch.randn(12, wt, generator=g), 0.5 * torch.randn(12, wt, generator=g)
    deep = [0.5 * torch.randn(HEAD["deep_len"], wt, generator=g) for _ in deep_blocks]
    with torch.no_grad():
        for mod in [model, adapter] + [m for p in bicmci for m in p]:
            for p in mod.parameters():
                p.copy_(p.half().float())
        for x in [ctx_n, ctx_a] + deep:
            x.copy_(x.half().float())
        tok = open_clip.get_tokenizer("ViT-B-32")
        ctx = " ".join(["X"] * HEAD["n_ctx"])
        text = encode_prompts(model, ctx_n, ctx_a, deep, deep_blocks,
                              tok([f"{ctx} object.", f"{ctx} damaged object."]))
    for x in bicmci:
        x[0].eval(), x[1].eval()
    adapter.eval()

    with open(os.path.join(out, "b16_config.json"), "w") as f:
        json.dump(cfg, f)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "b16.safetensors"))
    tensors = {"prompts.normal_ctx": ctx_n, "prompts.abnormal_ctx": ctx_a}
    tensors.update({f"prompts.deep.{i}": x for i, x in enumerate(deep)})
    for l, (x_it, x_ti) in enumerate(bicmci):
        tensors.update(x_it.tensors(f"bicmci.{l}.image_from_text"))
        tensors.update(x_ti.tensors(f"bicmci.{l}.text_from_image"))
    for n in ("c1", "c2", "c3"):
        c = getattr(adapter, n)
        tensors[f"adapter.{n}.weight"], tensors[f"adapter.{n}.bias"] = c.weight, c.bias
    backbone = {"embed_dim": d, "vision_width": cfg["vision_cfg"]["width"],
                "vision_layers": cfg["vision_cfg"]["layers"], "patch_size": cfg["vision_cfg"]["patch_size"],
                "text_width": wt, "text_layers": cfg["text_cfg"]["layers"], "fingerprint": fingerprint(model)}
    meta = {"format": "kanoclip-head/1", "head": json.dumps(HEAD), "detector": json.dumps(DET),
            "backbone": json.dumps(backbone)}
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()},
              os.path.join(out, "b16_head.safetensors"), metadata=meta)

    pre = open_clip.image_transform(DET["input_size"], is_train=False)
    x = pre(Image.open(picture).convert("RGB")).unsqueeze(0)
    x.numpy().astype("<f4").tofile(os.path.join(out, "input.bin"))
    graph = DetectGraph(model, bicmci, adapter, text).eval()
    with torch.no_grad():
        score, prob, sm = graph(x)
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump({"score": float(score[0]), "global_probability": float(prob[0]),
                   "map_max": float(sm.max()), "map_mean": float(sm.mean())}, f)
    torch.onnx.export(graph, (x,), os.path.join(out, "b16_detect.onnx"), opset_version=17,
                      input_names=["image"], output_names=["score", "global_probability", "map"], dynamo=False)
    torch.onnx.export(Visual(model), (x,), os.path.join(out, "b16_visual.onnx"), opset_version=17,
                      input_names=["image"], output_names=["embedding"], dynamo=False)
    print(f"wrote {out}: score {float(score[0]):.6f} (open_clip {open_clip.__version__}, torch {torch.__version__})")


if __name__ == "__main__":
    main()
