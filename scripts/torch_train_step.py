"""The PyTorch side of the training-step comparison: one step of KAnoCLIP's head (spec §6)
on a ViT-B/16-shaped random open_clip model, batch 8 at 224, on this CPU with as many
threads as kanoclip uses. Split as `cargo bench --bench backbone` (KANOCLIP_BENCH_TRAIN=1)
splits it: the frozen features, then the head's forward, backward and Adam step.

    scripts/make-fixtures' venv:  python scripts/torch_train_step.py [threads]
"""
import statistics
import sys
import time

import open_clip
import torch
import torch.nn as nn
import torch.nn.functional as F

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from head_reference import Adapter, XAttn, encode_prompts  # noqa: E402
from make_fixtures import vision_forward  # noqa: E402

torch.set_grad_enabled(True)  # make_fixtures turns gradients off on import
THREADS = int(sys.argv[1]) if len(sys.argv) > 1 else 2
torch.set_num_threads(THREADS)
torch.manual_seed(111)
g = torch.Generator().manual_seed(111)

model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
for p in model.parameters():
    p.requires_grad_(False)
d, wt = model.text_projection.shape[1], model.token_embedding.weight.shape[1]
taps, vv_from, size, grid, tau = [3, 6, 9, 12], 4, 224, 14, 0.07
deep_blocks = list(range(2, 10))


class Head(nn.Module):
    def __init__(self):
        super().__init__()
        self.ctx_n = nn.Parameter(0.02 * torch.randn(12, wt, generator=g))
        self.ctx_a = nn.Parameter(0.02 * torch.randn(12, wt, generator=g))
        self.deep = nn.ParameterList([nn.Parameter(0.02 * torch.randn(4, wt, generator=g)) for _ in deep_blocks])
        self.bicmci = nn.ModuleList([nn.ModuleList([XAttn(d, 4, g), XAttn(d, 4, g)]) for _ in taps])
        self.adapter = Adapter(d, d // 4, g)


head = Head()
tok = open_clip.get_tokenizer("ViT-B-16")
ctx = " ".join(["X"] * 12)
tokens = tok([f"{ctx} object.", f"{ctx} damaged object."])
k_general = F.normalize(torch.randn(2, d, generator=g), dim=-1)
opt = torch.optim.Adam(head.parameters(), lr=1e-3, betas=(0.5, 0.999))


def focal(probs, mask, gamma=2.0, smooth=1e-5):
    a = mask.clamp(smooth, 1 - smooth)
    pt = probs[:, 0] * (1 - a) + probs[:, 1] * a + smooth
    return (-(1 - pt) ** gamma * pt.log()).mean()


def dice(x, y):
    x, y = x.flatten(1), y.flatten(1)
    return 1 - ((2 * (x * y).sum(1) + 1) / (x.sum(1) + y.sum(1) + 1)).mean()


def head_step(feats, masks, labels):
    g_feat, tap_list = feats
    text = encode_prompts(model, head.ctx_n, head.ctx_a, list(head.deep), deep_blocks, tokens)
    b = g_feat.shape[0]
    t = text.unsqueeze(0).expand(b, -1, -1)
    local = 0
    for l, tap in enumerate(tap_list):
        p = tap[:, 1:]
        x_it, x_ti = head.bicmci[l]
        pp, tt = p + x_it(p, t), t + x_ti(t, p)
        s = (F.normalize(pp, dim=-1) @ F.normalize(tt, dim=-1).transpose(1, 2) / tau).softmax(-1)
        s = s.transpose(1, 2).reshape(b, 2, grid, grid)
        s = F.interpolate(s, size=(size, size), mode="bilinear", align_corners=False)
        local = local + focal(s, masks) + dice(s[:, 1], masks) + dice(s[:, 0], 1 - masks)
    gg = g_feat + 0.2 * head.adapter(tap_list[-1][:, 1:], grid)
    logits = F.normalize(gg, dim=-1) @ text.T / tau
    glob = F.cross_entropy(logits, labels)
    kd = (1 - F.cosine_similarity(text, k_general)).sum()
    loss = kd + glob + local
    opt.zero_grad()
    loss.backward()
    opt.step()
    return float(loss.detach())


images = torch.randn(8, 3, size, size, generator=g)
masks = torch.zeros(8, size, size)
labels = torch.tensor([0, 1] * 4)
feat_ms, step_ms = [], []
for _ in range(3):
    t0 = time.perf_counter()
    with torch.no_grad():
        feats = vision_forward(model, images, vv_from, taps)
        feats = (feats[0].detach(), [x.detach() for x in feats[1]])
    feat_ms.append(1000 * (time.perf_counter() - t0))
    t0 = time.perf_counter()
    head_step(feats, masks, labels)
    step_ms.append(1000 * (time.perf_counter() - t0))
f, s = statistics.median(feat_ms), statistics.median(step_ms)
print(f"torch {torch.__version__}, open_clip {open_clip.__version__}, {THREADS} threads: "
      f"train step batch 8 at 224 (median of 3): frozen features {f:.0f} ms, head step {s:.0f} ms, "
      f"without cache {f + s:.0f} ms")
