"""curves.png in Pillow: validation error per epoch, one panel per report table, one line
per row, each row with its own colour (and, past ten rows, its own dash pattern).

Pillow (already a dependency, for image folders) draws these few lines; a plotting
library would be a second, much larger dependency for one picture. The axes are what a
reader needs: a linear epoch axis with integer ticks, and error ticks at round values
(1-2-5 steps; a log axis with 1-2-5 ticks per decade when the errors span over a decade).
"""
from __future__ import annotations

import colorsys
import math

from PIL import Image, ImageDraw, ImageFont

# matplotlib's "tab10": ten colours readers tell apart (also in greyscale by lightness)
PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]
DASHES = [None, (10, 5), (3, 4), (12, 4, 3, 4)]   # solid, dashed, dotted, dash-dot (pixels on, off, ...)
PANEL = (640, 430)                                 # one panel: plot and legend
MARGIN = dict(left=62, right=190, top=48, bottom=46)


def style(j: int, n: int):
    """(colour, dash) of row j of n: the ten palette colours, then evenly spaced hues, and
    a dash pattern per block of ten rows, so no two rows look alike."""
    if n <= len(PALETTE):
        return PALETTE[j], None
    r, g, b = colorsys.hls_to_rgb(j / n, 0.42 if j % 2 else 0.55, 0.75)
    return (int(255 * r), int(255 * g), int(255 * b)), DASHES[(j // len(PALETTE)) % len(DASHES)]


def nice_ticks(lo: float, hi: float, target: int = 6) -> list[float]:
    """Round ticks (1, 2 or 5 times a power of ten apart) covering [lo, hi]."""
    span = max(hi - lo, 1e-12)
    raw = span / max(target - 1, 1)
    mag = 10 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    first = math.floor(lo / step + 1e-9) * step
    ticks, t = [], first
    while t <= hi + step * 1e-9 + step:
        ticks.append(round(t, 12))
        if t >= hi - step * 1e-9:
            break
        t += step
    return ticks


def log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks per decade from just below lo to just above hi."""
    ticks = []
    for e in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks += [m * 10.0 ** e for m in (1, 2, 5)]
    below = [t for t in ticks if t <= lo]
    above = [t for t in ticks if t >= hi]
    return [t for t in ticks if (below[-1] if below else lo) <= t <= (above[0] if above else hi)]


def _wrap(d, text, font, width):
    """``text`` in lines no wider than ``width`` pixels (at most two; the rest cut with ...)."""
    lines, line = [], ""
    for word in text.split():
        trial = f"{line} {word}".strip()
        if line and d.textlength(trial, font=font) > width:
            lines.append(line)
            line = word
        else:
            line = trial
    lines.append(line)
    if len(lines) > 2:
        lines = [lines[0], lines[1] + " ..."]
    return lines


def _label(v: float) -> str:
    return f"{v:g}"


def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:   # Pillow < 10.1: the bitmap font
        return ImageFont.load_default()


def _dashed(d, pts, colour, dash, width=2):
    if dash is None:
        d.line(pts, fill=colour, width=width)
        return
    k, left, on = 0, dash[0], True     # position in the pattern carries over between segments
    for (x0, y0), (x1, y1) in zip(pts, pts[1:]):
        seg = math.hypot(x1 - x0, y1 - y0)
        t = 0.0
        while t < seg:
            u = min(seg, t + left)
            if on:
                d.line([(x0 + (x1 - x0) * t / seg, y0 + (y1 - y0) * t / seg),
                        (x0 + (x1 - x0) * u / seg, y0 + (y1 - y0) * u / seg)], fill=colour, width=width)
            left -= u - t
            t = u
            if left <= 1e-9:
                k = (k + 1) % len(dash)
                left, on = dash[k], not on


def _panel(img, box, title, curves, ylabel, font, small):
    """One chart in ``box`` (x0, y0, x1, y1) of ``img``."""
    d = ImageDraw.Draw(img)
    x0, y0, x1, y1 = box
    lines = _wrap(d, title, font, x1 - x0 - 16)
    for k, line in enumerate(lines):
        d.text((x0 + 8, y0 + 6 + 18 * k), line, fill="black", font=font)
    left, right, bottom = x0 + MARGIN["left"], x1 - MARGIN["right"], y1 - MARGIN["bottom"]
    top = y0 + MARGIN["top"] + 18 * max(len(lines) - 1, 0)
    values = [v for c in curves.values() for v in c if v is not None and math.isfinite(v)]
    if not values:
        d.text((left + 20, (top + bottom) // 2), "no data", fill="black", font=font)
        return
    n = max(len(c) for c in curves.values())
    lo, hi = min(values), max(values)
    log_y = lo > 0 and hi / lo > 10
    if log_y:
        ticks = log_ticks(lo, hi)
        tf = math.log10
    else:
        ticks = nice_ticks(min(lo, 0.0) if lo - 0 < 0.25 * (hi - lo) else lo, hi)
        tf = float
    ylo, yhi = tf(ticks[0]), tf(ticks[-1])
    if yhi - ylo < 1e-12:
        ylo, yhi = ylo - 1, yhi + 1

    def xy(epoch, v):
        x = left + (right - left) * ((epoch - 1) / max(n - 1, 1) if n > 1 else 0.5)
        y = top + (bottom - top) * (1 - (tf(v) - ylo) / (yhi - ylo))
        return x, y
    d.rectangle([left, top, right, bottom], outline="black")
    for t in ticks:
        _, y = xy(1, t)
        d.line([left, y, right, y], fill=(228, 228, 228))
        d.line([left - 4, y, left, y], fill="black")
        w = d.textlength(_label(t), font=small)
        d.text((left - 7 - w, y - 7), _label(t), fill="black", font=small)
    for e in nice_ticks(1, n, 8) if n > 1 else [1]:
        if e != int(e) or not 1 <= e <= n:
            continue
        x, _ = xy(e, ticks[0])
        d.line([x, bottom, x, bottom + 4], fill="black")
        s = str(int(e))
        d.text((x - d.textlength(s, font=small) / 2, bottom + 6), s, fill="black", font=small)
    d.text(((left + right) // 2 - 20, bottom + 24), "epoch", fill="black", font=small)
    d.text((x0 + 4, top - 16), ylabel + (" (log scale)" if log_y else ""), fill="black", font=small)
    rows = list(curves.items())
    for j, (label, c) in enumerate(rows):
        colour, dash = style(j, len(rows))
        pts = [xy(i + 1, v) for i, v in enumerate(c) if v is not None and math.isfinite(v)]
        if len(pts) > 1:
            _dashed(d, pts, colour, dash)
        for x, y in pts:
            d.ellipse([x - 2.5, y - 2.5, x + 2.5, y + 2.5], fill=colour)
        ly = top + 4 + 17 * j
        _dashed(d, [(right + 10, ly + 7), (right + 40, ly + 7)], colour, dash, width=3)
        d.text((right + 46, ly), label[:22], fill="black", font=small)


def plot_panels(panels, path, ylabel="valid error %", size=PANEL, columns=2):
    """panels: list of (title, {label: [value per epoch]}); one chart each, ``columns`` wide."""
    panels = list(panels) or [("", {})]
    cols = min(columns, len(panels))
    rows = -(-len(panels) // cols)
    most = max((len(c) for _, c in panels), default=0)   # legend rows
    w, h = size[0], max(size[1], MARGIN["top"] + 18 + 17 * most + MARGIN["bottom"])
    img = Image.new("RGB", (w * cols, h * rows), "white")
    font, small = _font(15), _font(12)
    for k, (title, curves) in enumerate(panels):
        r, c = divmod(k, cols)
        _panel(img, (c * w, r * h, (c + 1) * w, (r + 1) * h), title, curves, ylabel, font, small)
    img.save(path)


def plot_curves(curves: dict, path, title="validation error per epoch", ylabel="valid error %"):
    """One panel: label -> list of values (one per epoch)."""
    plot_panels([(title, curves)], path, ylabel)
