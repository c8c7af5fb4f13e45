"""The benchmark report: per model, a table of scores (benchmarks x strategies, with the unweighted
average) and a plot of score against beam size per strategy.

Scores are grouped by the model they came from (its version) and never mixed: a table, an average
and a plot each hold one model's scores only."""
from __future__ import annotations

import io
import re
from collections import defaultdict
from typing import Iterable, Mapping

BEAM = re.compile(r"^(?P<name>.+?)_(?P<n>\d+)$")
BEAMS_SHOWN = (1, 2, 4, 8)  # ticks of the beam axis; others are added when scored


def strategy_and_beam(key: str) -> tuple[str, int]:
    """'stage_beam_4' -> ('stage_beam', 4); 'direct' -> ('direct', 1)."""
    m = BEAM.match(key)
    return (m["name"], int(m["n"])) if m else (key, 1)


def by_model(records: Iterable[Mapping]) -> dict[str, dict[tuple[str, str], float]]:
    """{model: {(benchmark, strategy): score}} from score records holding `model`, `benchmark`,
    `strategy` and `score`. Two records of one model for one cell: the later one wins."""
    out: dict[str, dict[tuple[str, str], float]] = defaultdict(dict)
    for r in records:
        out[str(r["model"])][(r["benchmark"], r["strategy"])] = float(r["score"])
    return dict(out)


def table(scores: dict[tuple[str, str], float], benchmarks: list[str]) -> tuple[list[str], list[dict]]:
    """One model's scores: rows per strategy key, one column per benchmark plus `average` (None if
    any is missing)."""
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


def plotted_benchmarks(rows: list[dict], benchmarks: list[str]) -> list[str]:
    """The benchmarks every row has a score for: the plot averages over these, so a benchmark
    missing for some strategy shrinks the average instead of emptying the plot."""
    return [b for b in benchmarks if rows and all(r.get(b) is not None for r in rows)]


def beam_lines(rows: list[dict], benchmarks: list[str]) -> tuple[dict[str, list[tuple[int, float]]], list[str]]:
    """{strategy: [(beam, mean score)]} over the benchmarks all rows share (direct is the N=1 point
    of every line), and those benchmarks. When the rows share none, each point is the mean of the
    benchmarks it has."""
    common = plotted_benchmarks(rows, benchmarks)

    def value(r):
        have = [r[b] for b in (common or benchmarks) if r.get(b) is not None]
        return sum(have) / len(have) if have else None

    direct = next((value(r) for r in rows if r["strategy"] == "direct"), None)
    lines: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        name, n = strategy_and_beam(r["strategy"])
        v = value(r)
        if name != "direct" and v is not None:
            lines.setdefault(name, []).append((n, v))
    for name in lines:
        lines[name] = ([(1, direct)] if direct is not None else []) + sorted(lines[name])
    if direct is not None and not lines:
        lines["direct"] = [(1, direct)]
    return lines, common


def beam_plot_png(rows: list[dict], benchmarks: list[str] | None = None, title: str = "") -> bytes:
    """Mean score against beam size, one line per strategy (direct is the N=1 point of each).
    Every line has markers and its own small horizontal offset, so lines that coincide (the same
    scores) stay visible side by side."""
    from pipeline.plots import _pyplot

    plt = _pyplot()
    if benchmarks is None:
        benchmarks = [c for c in rows[0] if c not in ("strategy", "average")] if rows else []
    lines, common = beam_lines(rows, benchmarks)
    fig, ax = plt.subplots(figsize=(5.8, 3.6), dpi=100)
    markers = "osD^vP*X"
    names = sorted(lines)
    for i, name in enumerate(names):
        pts = lines[name]
        shift = 2 ** ((i - (len(names) - 1) / 2) * 0.04)  # a few percent along the log axis
        ax.plot([p[0] * shift for p in pts], [p[1] for p in pts], marker=markers[i % len(markers)],
                markersize=6, linewidth=1.6, alpha=0.85, label=name)
    ticks = sorted(set(BEAMS_SHOWN) | {n for pts in lines.values() for n, _ in pts})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks)
    ax.set_xticklabels([str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel("beam size N (1 = direct)")
    which = f"{len(common)} benchmarks" if common else "benchmarks scored"
    ax.set_ylabel(f"mean score ({which})")
    if title:
        ax.set_title(title, fontsize=9)
    if not lines:
        ax.text(0.5, 0.5, "no scores yet", ha="center", va="center", transform=ax.transAxes)
    else:
        ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    plt.close(fig)
    return buf.getvalue()
