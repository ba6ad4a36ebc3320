#!/usr/bin/env python3
"""Generate kanoclip's parity fixtures from the pinned Python reference.

Builds small, seeded, untrained open_clip models of two shapes (QuickGELU and GELU), a
Hugging Face CLIPModel copy of the first, and writes to tests/fixtures/:
  - weights (safetensors), configs (open_clip bare, open_clip hub-wrapped, HF config.json);
  - input images (PNG, already at each model's input size);
  - expected outputs of open_clip's encode_image / encode_text, the tokenizer ids, and the
    CLIP-VV taps of a reference dual-path forward written here from spec §2;
  - tokenizer ids of get_tokenizer('ViT-B-32') for >= 200 strings.

Run with scripts/make-fixtures (which creates the pinned venv). CI never runs this.
These weights are random: nothing here says anything about detection quality.
"""
import json
import math
import os
import random
import sys

import numpy as np
import open_clip
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file

# Set by the `__main__` block only: bench_torch.py, torch_train_step.py, onnx_export.py and
# fewshot_reference.py import this module with their own argv, which is not a folder.
OUT = None
torch.set_grad_enabled(False)

MODELS = {
    # name: (open_clip model config, weight dtype, wrapped in model_cfg)
    "tiny_quickgelu": ({
        "embed_dim": 32, "quick_gelu": True,
        "vision_cfg": {"image_size": 32, "patch_size": 8, "width": 48, "layers": 4, "head_width": 16},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 20, "heads": 4, "layers": 2},
    }, torch.float32, False),
    "small_gelu": ({
        "embed_dim": 24,
        "vision_cfg": {"image_size": 64, "patch_size": 16, "width": 64, "layers": 3, "head_width": 32, "mlp_ratio": 2.0},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2, "mlp_ratio": 3.0},
    }, torch.float16, True),
}


def build(cfg, dtype, seed):
    torch.manual_seed(seed)
    model = open_clip.CLIP(embed_dim=cfg["embed_dim"], vision_cfg=cfg["vision_cfg"], text_cfg=cfg["text_cfg"],
                           quick_gelu=cfg.get("quick_gelu", False))
    model.eval()
    # Untrained init leaves layer norms at 1/0 and biases at 0: perturb every tensor so that
    # each parameter's use is checked.
    g = torch.Generator().manual_seed(seed + 1)
    for name, p in model.named_parameters():
        noise = torch.randn(p.shape, generator=g)
        if name.endswith("logit_scale"):
            p.copy_(torch.tensor(math.log(1 / 0.07)) + 0.1 * noise)
        elif p.ndim == 1 and ("ln" in name or "norm" in name) and name.endswith("weight"):
            p.copy_(1.0 + 0.2 * noise)
        elif p.ndim <= 1:
            p.copy_(0.05 * noise)
        else:
            p.add_(0.02 * noise)
        # Store at the fixture's dtype and compute with exactly those values.
        p.copy_(p.to(dtype).to(torch.float32))
    return model



def rebuilt_tiny(out):
    """The tiny fixture model, rebuilt from its seed and checked bit for bit against the
    weights stored in `out` (the reference scripts that extend the fixtures start here)."""
    model = build(MODELS["tiny_quickgelu"][0], torch.float32, 1000)
    stored = load_file(os.path.join(out, "tiny_quickgelu.safetensors"))
    for k, v in model.state_dict().items():
        assert torch.equal(v, stored[k]), f"rebuilt {k} differs from the fixture"
    return model

def proj(v, x):
    return v.ln_post(x) @ v.proj


def vision_forward(model, images, vv_from, taps):
    """Spec §2 CLIP-VV, written against open_clip's own modules. Returns (g, taps)."""
    v = model.visual
    x = v.conv1(images)
    b, w, gh, gw = x.shape
    x = x.reshape(b, w, gh * gw).permute(0, 2, 1)
    cls = v.class_embedding.reshape(1, 1, w).expand(b, 1, w)
    x = torch.cat([cls, x], dim=1)
    pos = v.positional_embedding
    native = int(round(math.sqrt(pos.shape[0] - 1)))
    if gh != native:
        # Bilinear resize of the patch positions (half-pixel centres), as AnomalyCLIP.
        grid = pos[1:].reshape(1, native, native, w).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, size=(gh, gw), mode="bilinear", align_corners=False)
        pos = torch.cat([pos[:1], grid.permute(0, 2, 3, 1).reshape(gh * gw, w)], dim=0)
    x = x + pos
    h_ori = v.ln_pre(x)
    h_vv = None
    out = {}
    for i, blk in enumerate(v.transformer.resblocks):
        n = i + 1
        if vv_from is not None and n >= vv_from:
            if h_vv is None:
                h_vv = h_ori
            a = blk.attn
            y = blk.ln_1(h_ori)
            q, k, val = F.linear(y, a.in_proj_weight, a.in_proj_bias).chunk(3, dim=-1)
            heads = a.num_heads
            hd = w // heads
            split = lambda t: t.reshape(b, -1, heads, hd).transpose(1, 2)
            q, k, val = split(q), split(k), split(val)
            s = hd ** -0.5
            def att(qq, kk, vv):
                o = torch.softmax(qq @ kk.transpose(-1, -2) * s, dim=-1) @ vv
                return a.out_proj(o.transpose(1, 2).reshape(b, -1, w))
            a_ori = att(q, k, val)
            a_vv = att(val, val, val)
            h_ori = h_ori + a_ori
            h_ori = h_ori + blk.mlp(blk.ln_2(h_ori))
            h_vv = h_vv + a_vv          # a new tensor: earlier taps are never overwritten
        else:
            h_ori = blk(h_ori)
        if n in taps:
            out[n] = proj(v, h_vv if h_vv is not None else h_ori)
    g = proj(v, h_ori[:, 0])
    return g, [out[t] for t in taps]


def smooth_image(size, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    chans = []
    for c in range(3):
        fx, fy, ph = rng.uniform(1, 4), rng.uniform(1, 4), rng.uniform(0, 6.28)
        chans.append(0.5 + 0.35 * np.sin(6.28 * (fx * xx + fy * yy) + ph) + 0.15 * rng.standard_normal((size, size)))
    arr = np.clip(np.stack(chans, -1) * 255, 0, 255).round().astype(np.uint8)
    return Image.fromarray(arr, "RGB")


def tolist(t):
    return t.detach().to(torch.float32).cpu().numpy().tolist()


TEXTS = ["a photo of a damaged object.", "flawless hazelnut", "A crack on the SURFACE & a scratch!!",
         "a" * 300]


def run_case(model, cfg, images, texts, vv_from, taps, size):
    preprocess = open_clip.image_transform(size, is_train=False)
    batch = torch.stack([preprocess(im) for im in images])
    tokenizer = open_clip.get_tokenizer("ViT-B-32")
    tokens = tokenizer(texts)
    g_ref = model.encode_image(batch) if size == cfg["vision_cfg"]["image_size"] else None
    g, tap_list = vision_forward(model, batch, vv_from, taps)
    if g_ref is not None:
        assert torch.allclose(g, g_ref, atol=1e-5), "reference dual path disagrees with encode_image"
    for i in range(len(taps)):
        for j in range(i + 1, len(taps)):
            assert not torch.allclose(tap_list[i], tap_list[j]), "taps must differ"
    text = model.encode_text(tokens)
    return {
        "image_embeds": tolist(g),
        "text_embeds": tolist(text),
        "token_ids": tokens.tolist(),
        "patch_taps": [[tolist(t[i]) for t in tap_list] for i in range(len(images))],
        "logit_scale": float(model.logit_scale.exp()),
    }


def hf_export(model, cfg, name, dtype):
    """Write the same weights under Hugging Face CLIPModel names and check transformers agrees."""
    from transformers import CLIPConfig, CLIPModel
    v, t = cfg["vision_cfg"], cfg["text_cfg"]
    act = "quick_gelu" if cfg.get("quick_gelu") else "gelu"
    hf_cfg = CLIPConfig(
        projection_dim=cfg["embed_dim"],
        vision_config=dict(hidden_size=v["width"], intermediate_size=int(v["width"] * v.get("mlp_ratio", 4.0)),
                           num_attention_heads=v["width"] // v.get("head_width", 64), num_hidden_layers=v["layers"],
                           image_size=v["image_size"], patch_size=v["patch_size"], hidden_act=act, layer_norm_eps=1e-5),
        text_config=dict(hidden_size=t["width"], intermediate_size=int(t["width"] * t.get("mlp_ratio", 4.0)),
                         num_attention_heads=t["heads"], num_hidden_layers=t["layers"], max_position_embeddings=t["context_length"],
                         vocab_size=t["vocab_size"], hidden_act=act, layer_norm_eps=1e-5, eos_token_id=49407),
    )
    sd = {k: v_.detach().clone() for k, v_ in model.state_dict().items()}
    out = {}

    def blocks(src, dst, n):
        for i in range(n):
            s, d = f"{src}.{i}.", f"{dst}.{i}."
            q, k, vv = sd[s + "attn.in_proj_weight"].chunk(3)
            qb, kb, vb = sd[s + "attn.in_proj_bias"].chunk(3)
            out.update({d + "self_attn.q_proj.weight": q, d + "self_attn.k_proj.weight": k, d + "self_attn.v_proj.weight": vv,
                        d + "self_attn.q_proj.bias": qb, d + "self_attn.k_proj.bias": kb, d + "self_attn.v_proj.bias": vb})
            for a, b in [("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")]:
                for p in ("weight", "bias"):
                    out[f"{d}{b}.{p}"] = sd[f"{s}{a}.{p}"]

    blocks("visual.transformer.resblocks", "vision_model.encoder.layers", v["layers"])
    blocks("transformer.resblocks", "text_model.encoder.layers", t["layers"])
    out.update({
        "vision_model.embeddings.class_embedding": sd["visual.class_embedding"],
        "vision_model.embeddings.patch_embedding.weight": sd["visual.conv1.weight"],
        "vision_model.embeddings.position_embedding.weight": sd["visual.positional_embedding"],
        "vision_model.pre_layrnorm.weight": sd["visual.ln_pre.weight"], "vision_model.pre_layrnorm.bias": sd["visual.ln_pre.bias"],
        "vision_model.post_layernorm.weight": sd["visual.ln_post.weight"], "vision_model.post_layernorm.bias": sd["visual.ln_post.bias"],
        "visual_projection.weight": sd["visual.proj"].t().contiguous(),
        "text_model.embeddings.token_embedding.weight": sd["token_embedding.weight"],
        "text_model.embeddings.position_embedding.weight": sd["positional_embedding"],
        "text_model.final_layer_norm.weight": sd["ln_final.weight"], "text_model.final_layer_norm.bias": sd["ln_final.bias"],
        "text_projection.weight": sd["text_projection"].t().contiguous(),
        "logit_scale": sd["logit_scale"],
    })
    hf = CLIPModel(hf_cfg).eval()
    missing, unexpected = hf.load_state_dict(out, strict=False)
    assert not unexpected, unexpected
    assert all("position_ids" in m for m in missing), missing
    save_file({k: x.to(dtype).contiguous() for k, x in out.items()}, os.path.join(OUT, f"{name}_hf.safetensors"))
    hf_cfg.to_json_file(os.path.join(OUT, f"{name}_hf_config.json"))
    # A second copy computing with exactly the stored (rounded) values gives the expectations.
    stored = CLIPModel(hf_cfg).eval()
    stored.load_state_dict({k: x.to(dtype).to(torch.float32) for k, x in out.items()}, strict=False)
    return hf, stored


def features(x):
    return x if torch.is_tensor(x) else x.pooler_output


def main():
    cases = []
    for seed, (name, (cfg, dtype, wrapped)) in enumerate(MODELS.items()):
        model = build(cfg, dtype, 1000 + seed)
        size = cfg["vision_cfg"]["image_size"]
        sd = {k: x.to(dtype).contiguous() for k, x in model.state_dict().items()}
        save_file(sd, os.path.join(OUT, f"{name}.safetensors"))
        doc = {"model_cfg": cfg, "preprocess_cfg": {"mean": list(open_clip.OPENAI_DATASET_MEAN), "std": list(open_clip.OPENAI_DATASET_STD)}} if wrapped else cfg
        with open(os.path.join(OUT, f"{name}_config.json"), "w") as f:
            json.dump(doc, f, indent=1)
        images = [smooth_image(size, 10 * seed + i) for i in range(2)]
        paths = []
        for i, im in enumerate(images):
            p = f"images/{name}_{i}.png"
            im.save(os.path.join(OUT, p))
            paths.append(p)
        layers = cfg["vision_cfg"]["layers"]
        taps = [1, 2, layers] if layers > 3 else [1, 2, 3]
        vv_from = 2
        common = dict(config=f"{name}_config.json", images=paths, texts=TEXTS, vv_from=vv_from, taps=taps)
        cases.append(dict(name=name, weights=f"{name}.safetensors", input_size=size,
                          expected=run_case(model, cfg, images, TEXTS, vv_from, taps, size), **common))
        # Plain CLIP, no dual path: taps are proj(h) of the ordinary blocks.
        cases.append(dict(name=f"{name}_plain", weights=f"{name}.safetensors", input_size=size,
                          expected=run_case(model, cfg, images, TEXTS[:1], None, [1, layers], size),
                          **{**common, "texts": TEXTS[:1], "vv_from": None, "taps": [1, layers]}))
        if seed == 0:
            # A larger input: positional embedding resized bilinearly.
            big = [smooth_image(size + 2 * cfg["vision_cfg"]["patch_size"], 99 + i) for i in range(2)]
            bpaths = []
            for i, im in enumerate(big):
                p = f"images/{name}_big_{i}.png"
                im.save(os.path.join(OUT, p))
                bpaths.append(p)
            bsize = big[0].size[0]
            cases.append(dict(name=f"{name}_resized_pos", weights=f"{name}.safetensors", input_size=bsize,
                              expected=run_case(model, cfg, big, TEXTS[:1], vv_from, taps, bsize),
                              **{**common, "images": bpaths, "texts": TEXTS[:1]}))
            # The same model under Hugging Face names, checked against transformers itself.
            hf, stored = hf_export(model, cfg, name, torch.float16)
            pre = open_clip.image_transform(size, is_train=False)
            batch = torch.stack([pre(im) for im in images])
            tokens = open_clip.get_tokenizer("ViT-B-32")(TEXTS)
            ref = cases[-3]["expected"]
            hf_img = features(hf.get_image_features(pixel_values=batch))
            hf_txt = features(hf.get_text_features(input_ids=tokens))
            assert np.allclose(tolist(hf_img), ref["image_embeds"], atol=1e-5), "transformers disagrees on images"
            assert np.allclose(tolist(hf_txt), ref["text_embeds"], atol=1e-5), "transformers disagrees on text"
            hf_img = features(stored.get_image_features(pixel_values=batch))
            hf_txt = features(stored.get_text_features(input_ids=tokens))
            cases.append(dict(name=f"{name}_hf", weights=f"{name}_hf.safetensors", input_size=size,
                              expected={**ref, "image_embeds": tolist(hf_img), "text_embeds": tolist(hf_txt),
                                        "patch_taps": None, "logit_scale": float(stored.logit_scale.exp())},
                              **{**common, "config": f"{name}_hf_config.json"}))
    with open(os.path.join(OUT, "parity.json"), "w") as f:
        json.dump({"generator": "scripts/make_fixtures.py",
                   "versions": {"torch": torch.__version__, "open_clip": open_clip.__version__},
                   "note": "random untrained weights: parity only, no detection quality",
                   "cases": cases}, f)
    write_tokenizer_cases()
    write_preprocess_case()
    # Spec §3-§7 on the first model, with a random head (see head_reference.py).
    from head_reference import write_head_cases
    cfg = MODELS["tiny_quickgelu"][0]
    model = build(cfg, torch.float32, 1000)
    images = [Image.open(os.path.join(OUT, f"images/tiny_quickgelu_{i}.png")).convert("RGB") for i in range(2)]
    write_head_cases(OUT, model, cfg, vision_forward, images, [f"images/tiny_quickgelu_{i}.png" for i in range(2)], 32)
    from metrics_reference import write_metrics_cases
    write_metrics_cases(OUT)
    from metrics_reference import write_aupro_cases
    write_aupro_cases(OUT)


def write_preprocess_case():
    """A non-square image through open_clip's resize (PIL bicubic) and centre crop."""
    im = smooth_image(120, 5).resize((120, 90), Image.BICUBIC)
    im.save(os.path.join(OUT, "images/nonsquare_120x90.png"))
    x = open_clip.image_transform(32, is_train=False)(im)
    with open(os.path.join(OUT, "preprocess.json"), "w") as f:
        json.dump({"image": "images/nonsquare_120x90.png", "size": 32, "pixels": tolist(x.flatten())}, f)


def write_tokenizer_cases():
    tok = open_clip.get_tokenizer("ViT-B-32")
    fixed = [
        "", " ", "a", "A photo of a cat.", "a photo of a damaged hazelnut", "Hello,   world!!!",
        "tabs\tand\nnewlines\r\nhere", "   leading and trailing   ", "UPPER lower MiXeD",
        "café naïve résumé façade", "Crème brûlée à la carte", "Ærøskøbing Ångström", "straße STRASSE",
        "İstanbul ıi", "ΟΔΥΣΣΕΥΣ Σίσυφος", "Привет, мир", "日本語のテキスト", "中文测试：裂纹和划痕",
        "한국어 텍스트", "مرحبا بالعالم", "שלום עולם", "हिन्दी पाठ", "ไทย", "emoji 😀🎉👍🏽 and 🇫🇷",
        "👨‍👩‍👧‍👦 family", "❤️ heart", "numbers 1234567890 and 3.14159 and 1,000,000", "2024-11-30T12:00:00Z",
        "$100.00 €50 £20 ¥1000", "100% sure, 50/50", "e-mail: someone@example.com", "https://example.com/a?b=c&d=e",
        "C++ and C# and F#", "it's they're we've I'm you'll he'd", "IT'S THEY'RE", "don't won't can't",
        "\"quoted\" 'single'", "“curly” ‘quotes’ „low“ «guillemets»", "ﬁne ﬂow ﬀ ﬃ ligatures",
        "ＦＵＬＬＷＩＤＴＨ　ｔｅｘｔ１２３", "&amp; &lt;tag&gt; &quot;q&quot; &#39;s &#x27;",
        "&amp;amp;amp;", "<b>bold</b> &amp; more", "bell&#7x &#0; &#128; &#x110000; &#xD800; &#65",
        "&notit; &ampx &EACUTE; &Eacute; &eacute &unknown; & alone &#; &#x;", "a&lt;b&gt;c <x> &amp;amp;", "&nbsp;non-breaking", "tom &amp jerry",
        "e\u0301 combining acute", "n\u0303 tilde", "zero\u200bwidth space", "soft\u00adhyphen",
        "ctrl\x07bell\x1bescape", "ansi \x1b[31mred\x1b[0m text", "c1 \x80 \x93quote\x94", "line\u2028separator",
        "...!!!???", "---===+++", "a-b_c.d", "snake_case_name", "camelCaseName", "#hashtag @mention",
        "<start_of_text> literal", "x <end_of_text> y", "¡Hola! ¿Qué tal?", "½ ¼ ¾ ² ³", "™ ® ©",
        "ℌ𝔢𝔩𝔩𝔬 math letters", "𝟙𝟚𝟛 digits", "Ⅻ roman", "⁰¹²", "ğüşöçİ",
        "scratch " * 40, "x" * 500, " ".join(str(i) for i in range(100)), "a b " * 60,
    ]
    rng = random.Random(7)
    pool = list("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789 .,;:!?'\"-_()[]{}/\\@#$%^&*+=~`|<>")
    pool += list("éèêëàâäôöûüçñßøåæœ") + list("αβγδΣσςЖжЙй") + list("日本中文한국") + ["😀", "🎉", "❤️", "👍🏽"]
    pool += ["  ", "\t", "\n", "&amp;", "'s", "'ll", "’", "“", "ﬁ", "Ａ", "１"]
    words = ["crack", "scratch", "hazelnut", "metal", "surface", "defect", "normal", "damaged", "object",
             "bottle", "screw", "carpet", "leather", "transistor", "pill", "capsule", "wood", "tile"]
    rand = []
    for _ in range(170):
        n = rng.randint(1, 12)
        parts = [rng.choice(words) if rng.random() < 0.4 else "".join(rng.choice(pool) for _ in range(rng.randint(1, 8)))
                 for _ in range(n)]
        rand.append(rng.choice([" ", "", "  ", "-"]).join(parts))
    strings = fixed + rand
    ids = tok(strings).tolist()
    with open(os.path.join(OUT, "tokenizer.json"), "w") as f:
        json.dump({"generator": "scripts/make_fixtures.py", "tokenizer": "open_clip.get_tokenizer('ViT-B-32')",
                   "context_length": 77, "cases": [{"text": s, "ids": i} for s, i in zip(strings, ids)]}, f,
                  ensure_ascii=False)
    print(f"{len(strings)} tokenizer cases")


if __name__ == "__main__":
    OUT = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures")
    os.makedirs(os.path.join(OUT, "images"), exist_ok=True)
    main()
