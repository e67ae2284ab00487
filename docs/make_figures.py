"""Draw the documentation figures: ``docs/msb_layout.png`` (the bit layout of embedded MSB copies
and of duplicated columns, see ``docs/protection.md``).

Usage: ``.venv/bin/python docs/make_figures.py`` (writes next to this file, atomically).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, Rectangle  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crossbar.engine import CrossbarConfig  # noqa: E402

HERE = Path(__file__).resolve().parent
C_DATA, C_COPY, C_ZERO, C_DUP = "#9ecae1", "#fdae6b", "#e0e0e0", "#a1d99b"


def slice_bits(cfg: CrossbarConfig) -> list[list[str]]:
    """Magnitude bit names per slice, LSB slice first, each slice MSB first."""
    out, pos = [], 0
    for b in cfg.slice_bits:
        out.append([f"m{pos + k}" for k in range(b)][::-1])
        pos += b
    return out


def draw_layout(ax, cfg: CrossbarConfig) -> None:
    bits = slice_bits(cfg)
    S = len(bits)
    top = " ".join(bits[-1])
    rows = [
        ("unprotected\n8-bit code (7 magnitude bits)", [(" ".join(b), C_DATA) for b in bits]),
        ("msb_embed, msb_copies=1\nweight keeps m6..m2 (6-bit code)",
         [(f"0  {top}", C_COPY)] + [(" ".join(b), C_DATA) for b in bits[1:]]),
        ("msb_embed, msb_copies=2\nweight keeps m6..m4 (4-bit code)",
         [(f"0  {top}", C_COPY), (f"0  {top}", C_COPY)] + [(" ".join(b), C_DATA) for b in bits[2:]]),
    ]
    w, h = 2.4, 0.7
    for r, (label, cells) in enumerate(rows):
        y = -r * 1.25
        ax.text(-0.3, y + h / 2, label, ha="right", va="center", fontsize=8.5)
        for k, (txt, col) in enumerate(cells):
            s = S - 1 - k  # draw MSB slice on the left
            txt, col = cells[s]
            x = k * (w + 0.15)
            ax.add_patch(Rectangle((x, y), w, h, facecolor=col, edgecolor="k", lw=0.8))
            ax.text(x + w / 2, y + h / 2, txt, ha="center", va="center", fontsize=10, family="monospace")
            if r == 0:
                nb = cfg.slice_bits[s]
                ax.text(x + w / 2, y + h + 0.12, f"slice s{s} ({nb} bit{'s' if nb > 1 else ''})\n"
                        f"weight 2^{s * cfg.bits_per_cell}", ha="center", va="bottom", fontsize=8)
    ax.text(-4.1, -3 * 1.25 + 0.45,
            "One cell per slice; the same layout in the G+ and the G- column of a differential pair\n"
            "(|q| on G+ for q > 0, on G- for q < 0). msb_embed re-quantizes |q| to a multiple of 4 (1 copy)\n"
            "or 16 (2 copies): the dropped bits are 0 and the copy digit m6 sits at the cell's low level.\n"
            "Decode per row block on ADC outputs: median(P_s3, P_s1, P_s0) with 2 copies; with 1 copy the\n"
            "mean if |P_s3 - P_s0| <= tol, else the smaller |P| (an SA1 cell reads level 3 and inflates\n"
            "a mostly-zero MSB partial sum).",
            fontsize=7.5, va="top")
    ax.set_xlim(-4.2, S * (w + 0.15) + 0.1)
    ax.set_ylim(-5.2, 1.7)
    ax.axis("off")
    ax.text(-4.2, 1.65, "Embedded MSB copies: what each cell of one weight holds (8-bit weights, 2-bit cells, "
            "slices LSB first (2, 2, 2, 1) bits)", fontsize=10, va="top")


def draw_dup(ax) -> None:
    """A tile row block: an output's 8 columns, its MSB pair's two copies in freed columns, the
    per-column ADCs and the vote before the shift-and-add."""
    cols = [("s3+", C_DATA), ("s3-", C_DATA), ("s2+", C_DATA), ("s2-", C_DATA), ("s1+", C_DATA), ("s1-", C_DATA),
            ("s0+", C_DATA), ("s0-", C_DATA), ("", "white"), ("s3+'", C_DUP), ("s3-'", C_DUP), ("s3+''", C_DUP),
            ("s3-''", C_DUP), ("free", C_ZERO)]
    w = 0.55
    for k, (t, c) in enumerate(cols):
        if not t:
            continue
        x = k * (w + 0.08)
        ax.add_patch(Rectangle((x, 0), w, 2.2, facecolor=c, edgecolor="k", lw=0.6))
        ax.text(x + w / 2, 1.1, t, rotation=90, ha="center", va="center", fontsize=8, family="monospace")
    for k in range(6):
        ax.plot([-0.3, len(cols) * (w + 0.08)], [0.25 + k * 0.35] * 2, color="0.6", lw=0.5, zorder=0)
    ax.text(-0.4, 1.1, "word lines of\nrow block r\n(inputs x_i)", ha="right", va="center", fontsize=8)

    def adc(x0, x1, label, y=-0.9):
        ax.add_patch(Rectangle((x0, y), x1 - x0, 0.5, facecolor="white", edgecolor="k", lw=0.8))
        ax.text((x0 + x1) / 2, y + 0.25, label, ha="center", va="center", fontsize=7.5)

    step = w + 0.08
    adc(0, 2 * step - 0.08, "ADC\nP_s3")
    adc(2 * step, 8 * step - 0.08, "ADC P_s2, P_s1, P_s0")
    adc(9 * step, 11 * step - 0.08, "ADC\nP'_s3")
    adc(11 * step, 13 * step - 0.08, "ADC\nP''_s3")
    ax.add_patch(Rectangle((3 * step, -2.3), 7 * step, 0.6, facecolor="#fff7bc", edgecolor="k", lw=0.8))
    ax.text(6.5 * step, -2.0, "vote: median(P_s3, P'_s3, P''_s3)", ha="center", va="center", fontsize=8)
    for x in (step - 0.04, 10 * step - 0.04, 12 * step - 0.04):
        ax.add_patch(FancyArrowPatch((x, -0.92), (6.5 * step, -1.68), arrowstyle="->", mutation_scale=8, lw=0.7))
    ax.text(0, -2.75, "then, digitally: y_o += fac[r, o] (2^6 vote + 2^4 P_s2 + 2^2 P_s1 + P_s0),\n"
            "summed over the row blocks r of the layer", fontsize=8, va="top")
    ax.text(-2.3, 2.45, "Duplication: G+/G- copies of output o's MSB pair in freed columns (any column block: all share\n"
            "the row block's word lines); each pair still subtracts in analog before its own ADC", fontsize=9, va="bottom")
    ax.set_xlim(-2.4, len(cols) * step + 2.5)
    ax.set_ylim(-3.4, 3.2)
    ax.axis("off")


def main() -> None:
    cfg = CrossbarConfig()
    fig, axes = plt.subplots(2, 1, figsize=(10.5, 9.0), gridspec_kw={"height_ratios": [1.15, 1]})
    draw_layout(axes[0], cfg)
    draw_dup(axes[1])
    fig.tight_layout()
    from device.plots import save_figure

    print(save_figure(fig, HERE / "msb_layout.png", dpi=140)[0])


if __name__ == "__main__":
    main()
