"""The benchmark report: a table of scores (benchmarks x strategies, with the unweighted average)
and a plot of score against beam size per strategy."""
from __future__ import annotations

import io
import re

BEAM = re.compile(r"^(?P<name>.+?)_(?P<n>\d+)$")


def strategy_and_beam(key: str) -> tuple[str, int]:
    """'stage_beam_4' -> ('stage_beam', 4); 'direct' -> ('direct', 1)."""
    m = BEAM.match(key)
    return (m["name"], int(m["n"])) if m else (key, 1)


def table(scores: dict[tuple[str, str], float], benchmarks: list[str]) -> tuple[list[str], list[dict]]:
    """Rows per strategy key: one column per benchmark plus `average` (None if any is missing)."""
    keys = sorted({s for _, s in scores}, key=lambda k: (strategy_and_beam(k)[0] != "direct", strategy_and_beam(k)))
    rows = []
    for key in keys:
        row = {"strategy": key}
        values = []
        for b in benchmarks:
            v = scores.get((b, key))
            row[b] = None if v is None else round(v, 2)
            values.append(v)
        row["average"] = None if any(v is None for v in values) else round(sum(values) / len(values), 2)
        rows.append(row)
    return ["strategy", *benchmarks, "average"], rows


def markdown(columns: list[str], rows: list[dict]) -> str:
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for r in rows:
        out.append("| " + " | ".join("—" if r[c] is None else str(r[c]) for c in columns) + " |")
    return "\n".join(out)


def beam_plot_png(rows: list[dict]) -> bytes:
    """Average score against beam size, one line per strategy (direct is the N=1 point of each)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    direct = next((r["average"] for r in rows if r["strategy"] == "direct"), None)
    lines: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        name, n = strategy_and_beam(r["strategy"])
        if name != "direct" and r["average"] is not None:
            lines.setdefault(name, []).append((n, r["average"]))
    fig, ax = plt.subplots(figsize=(5.5, 3.4), dpi=100)
    for name, points in sorted(lines.items()):
        points = sorted(points)
        if direct is not None:
            points = [(1, direct)] + points
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=name)
    if direct is not None and not lines:
        ax.plot([1], [direct], marker="o", label="direct")
    ax.set_xlabel("beam size N (1 = direct)")
    ax.set_ylabel("average score (6 benchmarks)")
    ax.set_xscale("log", base=2)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
