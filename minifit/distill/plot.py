"""A line chart in pillow: validation error per epoch, one line per method."""
from __future__ import annotations

import math

from PIL import Image, ImageDraw

COLORS = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
          (140, 86, 75), (227, 119, 194), (127, 127, 127)]


def plot_curves(curves: dict, path, title="", ylabel="", size=(800, 500), log_y=True):
    """curves: label -> list of values (one per epoch). With ``log_y`` (and positive
    values) the y axis is logarithmic, so errors of 90% and 0.9% both stay readable."""
    w, h = size
    left, right, top, bottom = 70, 170, 40, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    values = [v for c in curves.values() for v in c if math.isfinite(v)]
    if not values:
        d.text((w // 2 - 40, h // 2), "no data", fill="black")
        img.save(path)
        return
    n = max(len(c) for c in curves.values())
    log_y = log_y and min(values) > 0
    tf = math.log10 if log_y else (lambda v: v)
    inv = (lambda v: 10 ** v) if log_y else (lambda v: v)
    lo, hi = tf(min(values)), tf(max(values))
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    pad = 0.05 * (hi - lo)
    lo, hi = (lo - pad if log_y or lo < 0 else max(lo - pad, 0)), hi + pad

    def xy(i, v):  # v in data units
        x = left + (w - left - right) * (i / max(n - 1, 1))
        y = top + (h - top - bottom) * (1 - (tf(v) - lo) / (hi - lo))
        return x, y
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    for k in range(6):
        v = inv(lo + (hi - lo) * k / 5)
        _, y = xy(0, v)
        d.line([left - 4, y, left, y], fill="black")
        d.text((5, y - 6), f"{v:.3g}", fill="black")
    for k in range(min(n, 10)):
        i = round(k * (n - 1) / max(min(n, 10) - 1, 1))
        x, _ = xy(i, inv(lo))
        d.line([x, h - bottom, x, h - bottom + 4], fill="black")
        d.text((x - 6, h - bottom + 8), str(i + 1), fill="black")
    d.text((w // 2 - 60, h - 20), "epoch", fill="black")
    d.text((left, 10), f"{title}  ({ylabel}{', log scale' if log_y else ''})", fill="black")
    for j, (label, c) in enumerate(curves.items()):
        color = COLORS[j % len(COLORS)]
        pts = [xy(i, v) for i, v in enumerate(c) if math.isfinite(v)]
        if len(pts) > 1:
            d.line(pts, fill=color, width=2)
        for x, y in pts:
            d.ellipse([x - 2, y - 2, x + 2, y + 2], fill=color)
        ly = top + 20 * j
        d.line([w - right + 10, ly + 6, w - right + 30, ly + 6], fill=color, width=3)
        d.text((w - right + 35, ly), label, fill="black")
    img.save(path)
