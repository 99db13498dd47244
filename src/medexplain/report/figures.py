"""Pictures for people: map overlays on medical images and matplotlib plots, all returned as PNG bytes.

Overlays are computed from the saved raw maps alone, so the same map always gives the same picture.
Unsigned maps use a sequential colour map whose opacity grows with the value, so the grey anatomy stays
visible under weak evidence; signed maps use a diverging map centred on zero (red positive, blue negative).
"""

from __future__ import annotations

import io

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import ndimage

UNSIGNED_CMAP = "inferno"
SIGNED_CMAP = "RdBu_r"
MASK_OUTLINE_RGB = (0, 255, 120)


def to_display_rgb(image: np.ndarray) -> np.ndarray:
    """``(C, H, W)`` float image (any range) -> ``(H, W, 3)`` uint8, robustly scaled to the 1st-99th percentile."""
    channels = image if image.shape[0] in (1, 3) else image[:1]
    low, high = np.percentile(channels, [1, 99])
    scaled = np.clip((channels - low) / max(high - low, 1e-12), 0, 1)
    rgb = np.repeat(scaled, 3, axis=0) if scaled.shape[0] == 1 else scaled
    return (rgb.transpose(1, 2, 0) * 255).round().astype(np.uint8)


def is_signed(attribution: np.ndarray, tolerance: float = 0.01) -> bool:
    """A map is shown as signed when its negative part carries more than ``tolerance`` of its absolute mass."""
    total = np.abs(attribution).sum()
    return bool(total > 0 and -attribution[attribution < 0].sum() > tolerance * total)


def map_rgba(attribution: np.ndarray, signed: bool | None = None) -> np.ndarray:
    """``(H, W)`` raw map -> ``(H, W, 4)`` float RGBA in [0, 1], opacity proportional to |value|.

    Scaling uses the 99.5th percentile of |map| so a few extreme pixels do not wash out the rest.
    """
    signed = is_signed(attribution) if signed is None else signed
    values = attribution if signed else np.clip(attribution, 0, None)
    scale = float(np.percentile(np.abs(values), 99.5)) or float(np.abs(values).max()) or 1.0
    normalised = np.clip(values / scale, -1 if signed else 0, 1)
    rgba = colormaps[SIGNED_CMAP]((normalised + 1) / 2) if signed else colormaps[UNSIGNED_CMAP](normalised)
    rgba[..., 3] = np.abs(normalised) ** 0.7 * 0.85
    return rgba


def overlay(
    image: np.ndarray, attribution: np.ndarray | None, mask: np.ndarray | None = None, signed: bool | None = None
) -> np.ndarray:
    """Blend ``(H, W)`` map onto ``(C, H, W)`` image and outline ``(H, W)`` mask; ``(H, W, 3)`` uint8."""
    base = to_display_rgb(image).astype(np.float64) / 255
    if attribution is not None:
        rgba = map_rgba(attribution.astype(np.float64), signed)
        alpha = rgba[..., 3:]
        base = base * (1 - alpha) + rgba[..., :3] * alpha
    rgb = (base * 255).round().astype(np.uint8)
    if mask is not None and mask.any():
        filled = mask > 0
        outline = filled & ~ndimage.binary_erosion(filled)
        rgb[outline] = MASK_OUTLINE_RGB
    return rgb


def upscale_nearest(rgb: np.ndarray, min_side: int = 256) -> np.ndarray:
    """Enlarge small pictures (MedMNIST is 28 px) by an integer factor so pixels stay crisp in the page."""
    factor = max(1, -(-min_side // max(rgb.shape[:2])))
    return rgb.repeat(factor, axis=0).repeat(factor, axis=1) if factor > 1 else rgb


def new_figure(width: float, height: float) -> tuple[Figure, object]:
    """A figure with one axes on its own Agg canvas: no pyplot state, no global backend."""
    fig = Figure(figsize=(width, height))
    FigureCanvasAgg(fig)
    return fig, fig.add_subplot()


def figure_png(fig: Figure) -> bytes:
    """Render a matplotlib figure to PNG bytes."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    return buffer.getvalue()


def confusion_matrix_png(matrix: np.ndarray, class_names: list[str]) -> bytes:
    """Confusion matrix ``(K, K)`` (rows true, columns predicted) with counts in the cells."""
    k = len(class_names)
    fig, ax = new_figure(1.1 * k + 2, 1.1 * k + 1.5)
    ax.imshow(matrix, cmap="Blues")
    for i in range(k):
        for j in range(k):
            colour = "white" if matrix[i, j] > matrix.max() / 2 else "black"
            ax.text(j, i, str(int(matrix[i, j])), ha="center", va="center", color=colour)
    ax.set_xticks(range(k), class_names, rotation=45, ha="right")
    ax.set_yticks(range(k), class_names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    return figure_png(fig)


def curves_png(curves: dict[str, np.ndarray], xlabel: str, ylabel: str, title: str) -> bytes:
    """Mean curve with a 25-75 % band per name; each value is ``(N, T)`` curves over T steps."""
    fig, ax = new_figure(5.5, 3.6)
    for name, values in curves.items():
        steps = np.linspace(0, 1, values.shape[1])
        ax.plot(steps, values.mean(0), label=name)
        low, high = np.percentile(values, [25, 75], axis=0)
        ax.fill_between(steps, low, high, alpha=0.15)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure_png(fig)


def histograms_png(values: dict[str, np.ndarray], xlabel: str, title: str) -> bytes:
    """Overlaid histograms, one per name (e.g. Gini sparseness per method)."""
    fig, ax = new_figure(5.5, 3.6)
    finite = [v[np.isfinite(v)] for v in values.values()]
    if any(len(v) for v in finite):
        bins = np.linspace(min(v.min() for v in finite if len(v)), max(v.max() for v in finite if len(v)), 25)
        for name, v in zip(values, finite, strict=True):
            ax.hist(v, bins=bins, alpha=0.5, label=name)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("images")
    ax.set_title(title)
    ax.legend(fontsize=8)
    return figure_png(fig)


def line_png(series: dict[str, tuple[np.ndarray, np.ndarray]], xlabel: str, ylabel: str, title: str) -> bytes:
    """Simple line plot of named ``(x, y)`` series (training curves, ROC curves)."""
    fig, ax = new_figure(5.5, 3.6)
    for name, (x, y) in series.items():
        ax.plot(x, y, label=name, marker="o" if len(x) < 30 else None, markersize=3)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    return figure_png(fig)
