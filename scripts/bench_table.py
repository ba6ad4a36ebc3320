"""Print bench-compare's JSON lines as a table of kanoclip / PyTorch ratios (same work,
backend class, batch and threads), raw times beside them."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
key = lambda r: (r["work"], "gpu" if r["backend"] in ("wgpu", "cuda") else "cpu", r["batch"], r["threads"])
torch = {key(r): r for r in rows if r["side"] == "torch"}
print(f"{'work':<11} {'device':<6} {'batch':>5} {'threads':>7} {'kanoclip ms':>12} {'torch ms':>10} {'ratio':>7}")
for r in rows:
    if r["side"] != "kanoclip":
        continue
    t = torch.get(key(r))
    ratio = f"{r['ms'] / t['ms']:.2f}x" if t else "–"
    tms = f"{t['ms']:.1f}" if t else "–"
    print(f"{r['work']:<11} {r['backend']:<6} {r['batch']:>5} {r['threads']:>7} {r['ms']:>12.1f} {tms:>10} {ratio:>7}")
