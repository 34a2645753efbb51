#!/usr/bin/env python3
"""Plots bench/reformer_memory's CSV as an SVG, written by hand (no matplotlib needed).

    python3 bench/plot_reformer_memory.py docs/reformer_memory.csv docs/reformer_memory.svg

One chart, MiB against the number of layers: peak - W - S (what a training step needs
beyond the weights and Adam's slots) for the reversible and the plain model, and
W + S itself for scale.
"""
import csv
import sys

MIB = 1024.0 * 1024.0


def load(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def series(rows, reversible, value):
    pts = [(int(r["layers"]), value(r)) for r in rows if r["reversible"] == reversible]
    return sorted(pts)


def beyond(r):
    return (float(r["peak_bytes"]) - float(r["weights_bytes"]) - float(r["slots_bytes"])) / MIB


def weights_and_slots(r):
    return (float(r["weights_bytes"]) + float(r["slots_bytes"])) / MIB


def nice_step(span):
    for s in (1, 2, 5, 10, 20, 25, 50, 100, 200, 500):
        if span / s <= 8:
            return s
    return 1000


def main(argv):
    if len(argv) != 3:
        sys.exit("usage: plot_reformer_memory.py IN.csv OUT.svg")
    rows = load(argv[1])
    lines = [
        ("plain backprop: peak − W − S", "#d62728", "", series(rows, "0", beyond)),
        ("reversible: peak − W − S", "#1f77b4", "", series(rows, "1", beyond)),
        ("W + S (weights + Adam slots)", "#7f7f7f", "6,4", series(rows, "1", weights_and_slots)),
    ]
    xs = sorted({x for _, _, _, pts in lines for x, _ in pts})
    ymax = max(y for _, _, _, pts in lines for _, y in pts)
    step = nice_step(ymax)
    ytop = step * (int(ymax / step) + 1)

    W, H = 640, 412
    left, right, top, bottom = 70, 20, 40, 72
    pw, ph = W - left - right, H - top - bottom
    x0, x1 = 0, max(xs) + 1

    def px(x):
        return left + (x - x0) / (x1 - x0) * pw

    def py(y):
        return top + ph - y / ytop * ph

    out = []
    out.append(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
               f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">')
    out.append(f'<rect width="{W}" height="{H}" fill="white"/>')
    r0 = rows[0]
    out.append(f'<text x="{W / 2}" y="20" text-anchor="middle" font-size="14">'
               f'ReformerLM training step: memory beyond weights and optimizer slots</text>')
    # grid and y ticks
    y = 0
    while y <= ytop + 1e-9:
        out.append(f'<line x1="{left}" y1="{py(y):.1f}" x2="{left + pw}" y2="{py(y):.1f}" '
                   f'stroke="#e0e0e0"/>')
        out.append(f'<text x="{left - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
        y += step
    for x in xs:
        out.append(f'<line x1="{px(x):.1f}" y1="{top + ph}" x2="{px(x):.1f}" y2="{top + ph + 5}" '
                   f'stroke="black"/>')
        out.append(f'<text x="{px(x):.1f}" y="{top + ph + 18}" text-anchor="middle">{x}</text>')
    out.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="black"/>')
    out.append(f'<text x="{left + pw / 2}" y="{top + ph + 36}" text-anchor="middle">n_layers</text>')
    out.append(f'<text x="18" y="{top + ph / 2}" text-anchor="middle" '
               f'transform="rotate(-90 18 {top + ph / 2})">MiB (live bytes, exact)</text>')
    # The footnote in two lines, so that it fits the width.
    out.append(f'<text x="8" y="{H - 20}" font-size="10" fill="#555">'
               f'L = 4096, batch 1, d_model 64, LSH (n_hashes 2, chunk 64)</text>')
    out.append(f'<text x="8" y="{H - 7}" font-size="10" fill="#555">'
               f'{len(rows)} runs, each its own process; from {argv[1]}</text>')
    # lines
    for name, color, dash, pts in lines:
        d = " ".join(f"{px(x):.1f},{py(y):.1f}" for x, y in pts)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2"{dash_attr}/>')
        for x, y in pts:
            out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{color}"/>')
            # Above and to the left of the point: clear of a line that rises to the right.
            out.append(f'<text x="{px(x) - 5:.1f}" y="{py(y) - 6:.1f}" font-size="10" '
                       f'text-anchor="end" fill="{color}">{y:.1f}</text>')
    # legend
    lx, ly = left + 12, top + 10
    for i, (name, color, dash, _) in enumerate(lines):
        yy = ly + 18 * i
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(f'<line x1="{lx}" y1="{yy}" x2="{lx + 24}" y2="{yy}" stroke="{color}" '
                   f'stroke-width="2"{dash_attr}/>')
        out.append(f'<text x="{lx + 30}" y="{yy + 4}">{name}</text>')
    out.append("</svg>")
    with open(argv[2], "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main(sys.argv)
