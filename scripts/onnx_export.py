"""A ViT-B/16-shaped RANDOM open_clip model for the browser comparison: its weights as
safetensors with an open_clip config (for `kanoclip convert --to web`), and its image
encoder exported to ONNX (for onnxruntime-web). Same architecture, same weights.

    python scripts/onnx_export.py OUT_DIR      (the venv of scripts/make-fixtures, plus
                                                onnx==1.19.1 and onnxscript)
"""
import json
import os
import sys

import open_clip
import torch
from safetensors.torch import save_file

out = sys.argv[1] if len(sys.argv) > 1 else "b16-random"
os.makedirs(out, exist_ok=True)
torch.manual_seed(0)
model = open_clip.create_model("ViT-B-16", pretrained=None).eval()
cfg = open_clip.get_model_config("ViT-B-16")
with open(os.path.join(out, "b16_config.json"), "w") as f:
    json.dump(cfg, f)
save_file({k: v.contiguous() for k, v in model.state_dict().items()}, os.path.join(out, "b16.safetensors"))


class Visual(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, x):
        return self.m.encode_image(x)


x = torch.randn(1, 3, 224, 224)
torch.onnx.export(Visual(model), (x,), os.path.join(out, "b16_visual.onnx"), opset_version=17,
                  input_names=["image"], output_names=["embedding"], dynamo=False)
print(f"wrote {out}: b16.safetensors, b16_config.json, b16_visual.onnx (open_clip {open_clip.__version__}, torch {torch.__version__})")
