"""curves.png: round ticks, a distinct style per row for any number of rows, one panel per
report table."""
import numpy as np
from PIL import Image

from minifit.distill.plot import PANEL, log_ticks, nice_ticks, plot_panels, style


def test_error_ticks_are_round_and_cover_the_range():
    assert nice_ticks(0.9, 9.7) == [0, 2, 4, 6, 8, 10]
    assert nice_ticks(23.4, 61.0) == [20, 30, 40, 50, 60, 70]
    assert log_ticks(0.93, 88.0) == [0.5, 1, 2, 5, 10, 20, 50, 100]
    for lo, hi in [(0.3, 0.31), (1, 1000), (12.5, 13.75), (0, 97)]:
        t = nice_ticks(lo, hi)
        assert t[0] <= lo and t[-1] >= hi and len(set(np.round(np.diff(t), 9))) == 1
        step = t[1] - t[0]
        assert round(step / 10 ** np.floor(np.log10(step)), 6) in (1, 2, 5)


def test_every_row_has_its_own_style_for_any_number_of_rows():
    for n in (1, 8, 10, 13, 40):
        styles = [style(j, n) for j in range(n)]
        assert len(set(styles)) == n


def test_one_panel_per_table(tmp_path):
    curves = {f"row-{j}": list(50 / (1 + np.arange(6)) + j) for j in range(13)}
    plot_panels([("ablation", curves), ("kd", dict(list(curves.items())[:3])), ("size", {})], tmp_path / "c.png")
    img = Image.open(tmp_path / "c.png")
    assert img.size == (2 * PANEL[0], 2 * PANEL[1])   # three panels, two columns
    a = np.asarray(img)
    # the first panel's plot area holds the 13 rows' colours; the empty fourth cell stays white
    assert len({tuple(p) for p in a[:PANEL[1], :PANEL[0]].reshape(-1, 3)}) > 13
    assert (a[PANEL[1]:, PANEL[0]:] == 255).all()
