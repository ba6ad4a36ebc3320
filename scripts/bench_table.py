"""Print bench-compare's JSON lines as a table of kanoclip / PyTorch ratios (same work,
backend class, batch and threads), raw times beside them. With several rounds, each side's
time is its median over the rounds, and the last column gives the range of the rounds' own
ratios (each round runs both sides back to back)."""
import json
import statistics
import sys
from collections import defaultdict

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
key = lambda r: (r["work"], "gpu" if r["backend"] in ("wgpu", "cuda") else "cpu", r["batch"], r["threads"])
times = defaultdict(lambda: defaultdict(dict))  # key -> side -> round -> ms
backend = {}
for r in rows:
    times[key(r)][r["side"]][r.get("round", 1)] = r["ms"]
    if r["side"] == "kanoclip":
        backend[key(r)] = r["backend"]
print(f"{'work':<11} {'device':<6} {'batch':>5} {'threads':>7} {'kanoclip ms':>12} {'torch ms':>10} {'ratio':>7}  rounds")
for k, sides in times.items():
    if "kanoclip" not in sides:
        continue
    mine = statistics.median(sides["kanoclip"].values())
    theirs = sides.get("torch")
    if theirs:
        ref = statistics.median(theirs.values())
        per = sorted(v / theirs[r] for r, v in sides["kanoclip"].items() if r in theirs)
        spread = f"{len(per)}: {per[0]:.2f}-{per[-1]:.2f}x" if per else ""
        ratio, tms = f"{mine / ref:.2f}x", f"{ref:.1f}"
    else:
        ratio, tms, spread = "-", "-", ""
    work, _, batch, threads = k
    print(f"{work:<11} {backend[k]:<6} {batch:>5} {threads:>7} {mine:>12.1f} {tms:>10} {ratio:>7}  {spread}")
