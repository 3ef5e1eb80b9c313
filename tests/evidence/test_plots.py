"""Plots are written as PNG files without a display (Agg); their content is checked by size and
format only (pixels are matplotlib's business)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from PIL import Image

from regenguide.evidence.effects import continuous_effects, generic_effects
from regenguide.evidence.meta import meta_analysis
from regenguide.evidence.plots import forest_plot, funnel_plot, km_plot

DATA = Path(__file__).parent / "data"


def test_forest_and_funnel_for_a_difference_measure(tmp_path: Path) -> None:
    df = pd.read_csv(DATA / "normand1999.csv")
    es = continuous_effects(
        df.treat_mean, df.treat_sd, df.treat_n, df.ctrl_mean, df.ctrl_sd, df.ctrl_n, "SMD", list(df.study)
    )
    res = meta_analysis(es, "REML", knha=True)
    forest = forest_plot(res, tmp_path / "f.png", title="SMD")
    funnel = funnel_plot(res, tmp_path / "u.png")
    for path in (forest, funnel):
        with Image.open(path) as img:
            assert img.format == "PNG" and img.width > 300 and img.height > 200
    # taller forest plot for more studies
    many = meta_analysis(generic_effects([0.1] * 40, [0.05] * 40), "FE")
    with Image.open(forest_plot(many, tmp_path / "m.png")) as big, Image.open(forest) as small:
        assert big.height > small.height


def test_km_plot_ungrouped(tmp_path: Path) -> None:
    out = km_plot([1, 2, 3, 4, 5], [1, 0, 1, 1, 0], None, tmp_path / "km.png")
    with Image.open(out) as img:
        assert img.format == "PNG"
