"""Small PNG plots for the UI (matplotlib, headless)."""
from __future__ import annotations

import io


def _pyplot():
    # imported on first use: matplotlib costs half a second at start-up, which every command
    # that loads the definitions would pay
    import matplotlib

    matplotlib.use("Agg")  # no display on servers
    import matplotlib.pyplot as plt

    return plt


def stage_lengths_png(stage_chars: dict[str, list[int]]) -> bytes:
    """Histograms of the character length of each stage, one panel per stage."""
    plt = _pyplot()
    stages = list(stage_chars)
    fig, axes = plt.subplots(1, len(stages), figsize=(3.2 * len(stages), 2.6), dpi=100)
    for ax, name in zip(axes, stages):
        values = stage_chars[name]
        ax.hist(values or [0], bins=30, color="#4c72b0")
        ax.set_title(f"{name} (n={len(values)})", fontsize=10)
        ax.set_xlabel("characters", fontsize=8)
        ax.tick_params(labelsize=7)
    axes[0].set_ylabel("answers", fontsize=8)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})  # no version stamp: stable bytes
    plt.close(fig)
    return buf.getvalue()
