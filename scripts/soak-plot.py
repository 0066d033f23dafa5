#!/usr/bin/env python3
"""Draws `dunes bench soak --csv` samples as an SVG: RSS (MiB) and batch
latency p99 (ms) over elapsed time, one panel each; several CSVs are drawn
as several lines (label = file name).

    scripts/soak-plot.py before.csv after.csv > docs/img/soak.svg
"""
import csv
import sys

W, H, PAD = 720, 220, 50
COLORS = ["#c0392b", "#2471a3", "#1e8449", "#7d3c98"]


def load(path):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    return [(float(r["elapsed_s"]) / 60, float(r["rss_mib"]), float(r["batch_p99_ms"])) for r in rows]


def panel(y0, title, series, idx, unit):
    xmax = max(p[0] for s in series.values() for p in s) or 1
    ymax = max(p[idx] for s in series.values() for p in s) * 1.1 or 1
    out = [f'<text x="{PAD}" y="{y0 + 16}" font-size="13" font-family="sans-serif">{title}</text>']
    top, bottom = y0 + 25, y0 + H - 25
    out.append(f'<line x1="{PAD}" y1="{bottom}" x2="{W - 10}" y2="{bottom}" stroke="#555"/>')
    out.append(f'<line x1="{PAD}" y1="{top}" x2="{PAD}" y2="{bottom}" stroke="#555"/>')
    for frac in (0, 0.5, 1):
        yv = ymax * frac
        yy = bottom - (bottom - top) * frac
        out.append(f'<text x="{PAD - 5}" y="{yy + 4}" font-size="10" text-anchor="end" font-family="sans-serif">{yv:.0f}</text>')
    for m in range(0, int(xmax) + 1, max(1, int(xmax) // 10)):
        xx = PAD + (W - 10 - PAD) * m / xmax
        out.append(f'<text x="{xx}" y="{bottom + 14}" font-size="10" text-anchor="middle" font-family="sans-serif">{m} min</text>')
    for i, (name, pts) in enumerate(series.items()):
        c = COLORS[i % len(COLORS)]
        path = " ".join(
            f"{PAD + (W - 10 - PAD) * p[0] / xmax:.1f},{bottom - (bottom - top) * p[idx] / ymax:.1f}" for p in pts
        )
        out.append(f'<polyline fill="none" stroke="{c}" stroke-width="1.5" points="{path}"/>')
        out.append(f'<text x="{W - 200}" y="{top + 14 * (i + 1)}" font-size="11" fill="{c}" font-family="sans-serif">{name}</text>')
    return out


def main():
    series = {p.rsplit("/", 1)[-1]: load(p) for p in sys.argv[1:]}
    body = panel(0, "RSS (MiB)", series, 1, "MiB") + panel(H, "batch latency p99 per sample (ms)", series, 2, "ms")
    print(f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{2 * H}" viewBox="0 0 {W} {2 * H}">')
    print('<rect width="100%" height="100%" fill="white"/>')
    print("\n".join(body))
    print("</svg>")


if __name__ == "__main__":
    main()
