"""Reference of spec §3-§7 (KnPL prompt encoding, Bi-CMCI, Conv-Adapter, maps, scores),
written from the spec on torch's own modules (nn.MultiheadAttention, nn.Conv2d,
F.interpolate) and scipy's gaussian_filter, to check kanoclip's head and detector.
Used by make_fixtures.py; the weights it makes are random."""
import hashlib
import json
import os

import numpy as np
import open_clip
import scipy.ndimage
import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

TEMPLATES = ["a photo of a {}.", "a cropped photo of a {}.", "a close-up photo of a {}.", "a bright photo of a {}.",
             "a dark photo of a {}.", "a blurry photo of a {}.", "a good photo of a {}."]


def fingerprint(model):
    w = model.visual.conv1.weight.detach().to(torch.float16).numpy()
    return hashlib.sha256(w.astype("<f2").tobytes()).digest()[:16].hex()


def encode_prompts(model, ctx_n, ctx_a, deep, deep_blocks, tokens):
    m = ctx_n.shape[0]
    x = model.token_embedding(tokens)
    x = torch.cat([x[:, :1], torch.stack([ctx_n, ctx_a]), x[:, 1 + m:]], dim=1)
    x = x + model.positional_embedding
    for i, blk in enumerate(model.transformer.resblocks):
        if (i + 1) in deep_blocks:
            d = deep[deep_blocks.index(i + 1)]
            x = torch.cat([x[:, :1], d.unsqueeze(0).expand(x.shape[0], -1, -1), x[:, 1 + d.shape[0]:]], dim=1)
        x = blk(x, attn_mask=model.attn_mask)
    x = model.ln_final(x)
    x = x[torch.arange(x.shape[0]), tokens.argmax(dim=-1)] @ model.text_projection
    return F.normalize(x, dim=-1)


def training_free_text(model, kb):
    tok = open_clip.get_tokenizer("ViT-B-32")
    out = []
    for texts in (kb["general"]["normal"], kb["general"]["abnormal"]):
        prompts = [t.replace("{}", s) for s in texts for t in TEMPLATES]
        f = F.normalize(model.encode_text(tok(prompts)), dim=-1).mean(0)
        out.append(F.normalize(f, dim=-1))
    return torch.stack(out)


class XAttn(nn.Module):
    def __init__(self, d, heads, g):
        super().__init__()
        self.ln_q, self.ln_kv = nn.LayerNorm(d), nn.LayerNorm(d)
        self.mha = nn.MultiheadAttention(d, heads, batch_first=True)
        for p in self.parameters():
            p.data = 0.3 * torch.randn(p.shape, generator=g) / (p.shape[-1] ** 0.5 if p.ndim > 1 else 1)
        self.ln_q.weight.data += 1
        self.ln_kv.weight.data += 1

    def forward(self, x, ctx):
        kv = self.ln_kv(ctx)
        return self.mha(self.ln_q(x), kv, kv, need_weights=False)[0]

    def tensors(self, prefix):
        d = self.mha.embed_dim
        w, b = self.mha.in_proj_weight, self.mha.in_proj_bias
        out = {f"{prefix}.ln_q.weight": self.ln_q.weight, f"{prefix}.ln_q.bias": self.ln_q.bias,
               f"{prefix}.ln_kv.weight": self.ln_kv.weight, f"{prefix}.ln_kv.bias": self.ln_kv.bias,
               f"{prefix}.out.weight": self.mha.out_proj.weight, f"{prefix}.out.bias": self.mha.out_proj.bias}
        for i, n in enumerate("qkv"):
            out[f"{prefix}.{n}.weight"] = w[i * d:(i + 1) * d]
            out[f"{prefix}.{n}.bias"] = b[i * d:(i + 1) * d]
        return out


class Adapter(nn.Module):
    def __init__(self, d, r, g):
        super().__init__()
        self.c1, self.c2, self.c3 = nn.Conv2d(d, r, 1), nn.Conv2d(r, r, 3, padding=1), nn.Conv2d(r, d, 1)
        for p in self.parameters():
            p.data = 0.3 * torch.randn(p.shape, generator=g) / (np.prod(p.shape[1:]) ** 0.5 if p.ndim > 1 else 1)

    def forward(self, patches, grid):
        b, n, d = patches.shape
        x = patches.transpose(1, 2).reshape(b, d, grid, grid)
        x = self.c3(F.gelu(self.c2(F.gelu(self.c1(x)))))
        return x.mean(dim=(2, 3))


def tap_maps(tap_list, text, tau, grid, size, bicmci=None):
    """Spec §4-§5: each tap's patch map (with Bi-CMCI when given), up-sampled to the input
    size and summed over the taps, [batch, 1, size, size]."""
    b = tap_list[0].shape[0]
    t = text.unsqueeze(0).expand(b, -1, -1)
    total = torch.zeros(b, 1, size, size, device=text.device)
    for l, tap in enumerate(tap_list):
        p = tap[:, 1:]
        pp, tt = p, t
        if bicmci is not None:
            x_it, x_ti = bicmci[l]
            pp = p + x_it(p, t)
            tt = t + x_ti(t, p)
        z = F.normalize(pp, dim=-1) @ F.normalize(tt, dim=-1).transpose(1, 2) / tau
        s = z.softmax(dim=-1)
        m = ((s[..., 1] + 1 - s[..., 0]) / 2).reshape(b, 1, grid, grid)
        total = total + F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False)
    return total


def detect(model, vision_forward, batch, text, det, head=None):
    """Spec §4-§7 for a batch already at the input size; returns scores, probs and maps."""
    size, taps = det["input_size"], det["taps"]
    grid = size // model.visual.conv1.kernel_size[0]
    g, tap_list = vision_forward(model, batch, det["vv_from"], taps)
    b = batch.shape[0]
    total = tap_maps(tap_list, text, det["tau"], grid, size, head["bicmci"] if head is not None else None)
    if head is not None:
        g = g + head["alpha"] * head["adapter"](tap_list[-1][:, 1:], grid)
    probs = (F.normalize(g, dim=-1) @ text.T / det["tau"]).softmax(dim=-1)
    out = []
    for i in range(b):
        smooth = scipy.ndimage.gaussian_filter(total[i, 0].numpy().astype(np.float64), sigma=det["sigma"]) / len(taps)
        p = float(probs[i, 1])
        score = det["global_weight"] * p + (1 - det["global_weight"]) * float(smooth.max())
        out.append({"score": score, "global_probability": p, "map": smooth.astype(np.float32).flatten().tolist()})
    return out


def write_head_cases(out_dir, model, cfg, vision_forward, images, image_paths, preprocess_size):
    torch.manual_seed(5)
    g = torch.Generator().manual_seed(6)
    d, wt = cfg["embed_dim"], cfg["text_cfg"]["width"]
    layers = cfg["vision_cfg"]["layers"]
    head_cfg = {"n_ctx": 12, "deep_len": 4, "deep_blocks": [2, 9], "attn_heads": 4, "adapter_reduction": 4,
                "alpha": 0.2, "levels": 3}
    det = {"input_size": preprocess_size, "vv_from": 2, "taps": [1, 2, layers], "tau": 0.07, "sigma": 4.0,
           "global_weight": 0.5, "threshold": 0.5}
    deep_blocks = list(range(2, min(9, cfg["text_cfg"]["layers"]) + 1))
    ctx_n, ctx_a = 0.5 * torch.randn(12, wt, generator=g), 0.5 * torch.randn(12, wt, generator=g)
    deep = [0.5 * torch.randn(4, wt, generator=g) for _ in deep_blocks]
    head = {"bicmci": [(XAttn(d, 4, g), XAttn(d, 4, g)) for _ in range(3)], "adapter": Adapter(d, d // 4, g),
            "alpha": head_cfg["alpha"]}
    tok = open_clip.get_tokenizer("ViT-B-32")
    ctx = " ".join(["X"] * 12)
    tokens = tok([f"{ctx} object.", f"{ctx} damaged object."])
    text = encode_prompts(model, ctx_n, ctx_a, deep, deep_blocks, tokens)

    tensors = {"prompts.normal_ctx": ctx_n, "prompts.abnormal_ctx": ctx_a}
    tensors.update({f"prompts.deep.{i}": x for i, x in enumerate(deep)})
    for l, (x_it, x_ti) in enumerate(head["bicmci"]):
        tensors.update(x_it.tensors(f"bicmci.{l}.image_from_text"))
        tensors.update(x_ti.tensors(f"bicmci.{l}.text_from_image"))
    for n in ("c1", "c2", "c3"):
        c = getattr(head["adapter"], n)
        tensors[f"adapter.{n}.weight"], tensors[f"adapter.{n}.bias"] = c.weight, c.bias
    backbone = {"embed_dim": d, "vision_width": cfg["vision_cfg"]["width"], "vision_layers": layers,
                "patch_size": cfg["vision_cfg"]["patch_size"], "text_width": wt,
                "text_layers": cfg["text_cfg"]["layers"], "fingerprint": fingerprint(model)}
    meta = {"format": "kanoclip-head/1", "head": json.dumps(head_cfg), "detector": json.dumps(det),
            "backbone": json.dumps(backbone)}
    save_file({k: v.detach().float().contiguous() for k, v in tensors.items()},
              os.path.join(out_dir, "tiny_quickgelu_head.safetensors"), metadata=meta)

    pre = open_clip.image_transform(preprocess_size, is_train=False)
    batch = torch.stack([pre(im) for im in images])
    kb = {"format": "kanoclip-knowledge/1", "domain": "test",
          "general": {"normal": ["flawless object", "perfect hazelnut"],
                      "abnormal": ["object with a crack", "damaged object", "scratched metal"]},
          "general_provenance": {"model": "test fixture", "prompts": [], "date": "2026-11-30"}}
    with open(os.path.join(out_dir, "knowledge_small.json"), "w") as f:
        json.dump(kb, f, indent=1)
    free_text = training_free_text(model, kb)
    case = {
        "clip_config": "tiny_quickgelu_config.json", "weights": "tiny_quickgelu.safetensors",
        "head": "tiny_quickgelu_head.safetensors", "knowledge": "knowledge_small.json", "images": image_paths,
        "detector": det,
        "trained": {"text": text.tolist(), "results": detect(model, vision_forward, batch, text, det, head)},
        "training_free": {"text": free_text.tolist(),
                          "results": detect(model, vision_forward, batch, free_text, det, None)},
    }
    # Map back through the crop: a random map for a 120x90 original at input 32.
    rng = np.random.default_rng(3)
    m = rng.random((32, 32)).astype(np.float32)
    resized = (42, 32)  # torchvision: int(32 * 120 / 90) = 42
    crop = (round((42 - 32) / 2), 0)
    canvas = np.zeros((resized[1], resized[0]), np.float32)
    canvas[crop[1]:crop[1] + 32, crop[0]:crop[0] + 32] = m
    back = F.interpolate(torch.from_numpy(canvas)[None, None], size=(90, 120), mode="bilinear", align_corners=False)
    case["map_back"] = {"map": m.flatten().tolist(), "original": [120, 90], "size": 32,
                        "expected": back[0, 0].flatten().tolist()}
    with open(os.path.join(out_dir, "head_cases.json"), "w") as f:
        json.dump(case, f)
