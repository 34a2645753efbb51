#!/usr/bin/env python3
"""Per-token time against sequence length, dense vs LSH attention, as an SVG.

    python3 bench/plot_attention_scaling.py build/release/attention_bench/scaling.jsonl \
        docs/attention_scaling.svg [us_per_token | cpu_us_per_token]

Input: the JSON lines bench/run_attention_bench.sh writes in its "scaling" part, one per
benchmark run: {"name": "lsh/fwdbwd/n_hashes:2/L:4096/...", "us_per_token": ..., ...}.
Each point is the median over the runs of one configuration. Two panels (forward,
forward + backward), both axes logarithmic. No plotting library: the SVG is written by
hand, so the script needs nothing beyond Python 3.
"""
import json
import math
import re
import statistics
import sys

SERIES = [  # (label, regex over the benchmark name, colour, dash)
    ("dense (b = 1)", r"^dense/{pass}/L:(\d+)/", "#444444", ""),
    ("LSH, 1 hash", r"^lsh/{pass}/n_hashes:1/L:(\d+)/", "#1f77b4", ""),
    ("LSH, 2 hashes", r"^lsh/{pass}/n_hashes:2/L:(\d+)/", "#ff7f0e", ""),
    ("LSH, 4 hashes", r"^lsh/{pass}/n_hashes:4/L:(\d+)/", "#2ca02c", ""),
]
PANELS = [("fwd", "forward"), ("fwdbwd", "forward + backward")]
W, H = 460, 340          # one panel
ML, MR, MT, MB = 62, 12, 34, 46


METRIC = "us_per_token"


def load(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    data = {}
    for p, _ in PANELS:
        for label, pattern, _, _ in SERIES:
            pts = {}
            for r in rows:
                m = re.match(pattern.format(**{"pass": p}), r["name"])
                if m:
                    pts.setdefault(int(m.group(1)), []).append(r[METRIC])
            data[(p, label)] = sorted((L, statistics.median(v)) for L, v in pts.items())
    return data


def nice_ticks(lo, hi):
    ticks = []
    e = math.floor(math.log10(lo))
    while 10 ** e <= hi * 1.0001:
        for m in (1, 2, 5):
            v = m * 10 ** e
            if lo <= v <= hi:
                ticks.append(v)
        e += 1
    return ticks


def panel(data, p, title, x0):
    pts = [pt for (pp, _), v in data.items() if pp == p for pt in v]
    if not pts:
        return []
    lmin, lmax = min(L for L, _ in pts), max(L for L, _ in pts)
    ymin = 10 ** math.floor(math.log10(min(y for _, y in pts)))
    ymax = 10 ** math.ceil(math.log10(max(y for _, y in pts)))
    fx = lambda L: x0 + ML + (math.log2(L) - math.log2(lmin)) / max(
        1e-9, math.log2(lmax) - math.log2(lmin)) * (W - ML - MR)
    fy = lambda y: MT + (math.log10(ymax) - math.log10(y)) / (
        math.log10(ymax) - math.log10(ymin)) * (H - MT - MB)
    out = [f'<text x="{x0 + W / 2:.1f}" y="20" text-anchor="middle" font-size="14">{title}</text>',
           f'<rect x="{x0 + ML}" y="{MT}" width="{W - ML - MR}" height="{H - MT - MB}" '
           'fill="none" stroke="#999"/>']
    L = lmin
    while L <= lmax:
        x = fx(L)
        out.append(f'<line x1="{x:.1f}" y1="{MT}" x2="{x:.1f}" y2="{H - MB}" stroke="#eee"/>')
        label = f"{L // 1024}k" if L >= 1024 else str(L)
        out.append(f'<text x="{x:.1f}" y="{H - MB + 16}" text-anchor="middle" '
                   f'font-size="11">{label}</text>')
        L *= 2
    for t in nice_ticks(ymin, ymax):
        y = fy(t)
        out.append(f'<line x1="{x0 + ML}" y1="{y:.1f}" x2="{x0 + W - MR}" y2="{y:.1f}" '
                   'stroke="#eee"/>')
        out.append(f'<text x="{x0 + ML - 6}" y="{y + 4:.1f}" text-anchor="end" '
                   f'font-size="11">{t:g}</text>')
    out.append(f'<text x="{x0 + ML + (W - ML - MR) / 2:.1f}" y="{H - 10}" text-anchor="middle" '
               'font-size="12">sequence length L</text>')
    out.append(f'<text transform="translate({x0 + 16},{MT + (H - MT - MB) / 2:.1f}) rotate(-90)" '
               'text-anchor="middle" font-size="12">'
               + ("µs per token (CPU time)" if METRIC.startswith("cpu") else "µs per token")
               + "</text>")
    for label, _, colour, dash in SERIES:
        v = data[(p, label)]
        if not v:
            continue
        path = " ".join(f"{'M' if i == 0 else 'L'}{fx(L):.1f},{fy(y):.1f}"
                        for i, (L, y) in enumerate(v))
        out.append(f'<path d="{path}" fill="none" stroke="{colour}" stroke-width="2"'
                   + (f' stroke-dasharray="{dash}"' if dash else "") + "/>")
        for L, y in v:
            out.append(f'<circle cx="{fx(L):.1f}" cy="{fy(y):.1f}" r="3" fill="{colour}"/>')
    return out


def main():
    global METRIC
    if len(sys.argv) not in (3, 4):
        sys.exit(__doc__)
    if len(sys.argv) == 4:
        METRIC = sys.argv[3]
    data = load(sys.argv[1])
    body = []
    for i, (p, title) in enumerate(PANELS):
        body += panel(data, p, title, i * W)
    ly = H + 6
    for i, (label, _, colour, _) in enumerate(SERIES):
        x = 70 + i * 200
        body.append(f'<line x1="{x}" y1="{ly + 10}" x2="{x + 24}" y2="{ly + 10}" '
                    f'stroke="{colour}" stroke-width="2"/>')
        body.append(f'<text x="{x + 30}" y="{ly + 14}" font-size="12">{label}</text>')
    note = ("b = 1, 4 heads, d_head 64, causal; LSH: chunk_len 64, n_buckets 2L/64 "
            "(factorised above 128), batch 16384/L (32768 tokens at L = 32k); "
            "median of the runs")
    body.append(f'<text x="{W}" y="{ly + 36}" text-anchor="middle" font-size="11" '
                f'fill="#555">{note}</text>')
    svg = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{2 * W}" height="{H + 50}" '
           f'font-family="sans-serif">\n<rect width="100%" height="100%" fill="white"/>\n'
           + "\n".join(body) + "\n</svg>\n")
    with open(sys.argv[2], "w") as f:
        f.write(svg)


if __name__ == "__main__":
    main()
