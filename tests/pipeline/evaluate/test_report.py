"""The report: one table per model (never an average over two models), and a score-vs-beam plot
that survives a missing benchmark."""
import pytest

from pipeline.evaluate.report import beam_lines, beam_plot_png, by_model, markdown, table

BENCHES = ["MMStar", "MMVet"]


def test_scores_of_two_models_are_never_averaged_together():
    records = [
        {"model": "old", "benchmark": "MMStar", "strategy": "direct", "score": 10.0},
        {"model": "old", "benchmark": "MMVet", "strategy": "direct", "score": 20.0},
        {"model": "new", "benchmark": "MMStar", "strategy": "direct", "score": 70.0},
        {"model": "new", "benchmark": "MMVet", "strategy": "direct", "score": 90.0},
        {"model": "new", "benchmark": "MMStar", "strategy": "stage_beam_2", "score": 75.0},
    ]
    grouped = by_model(records)
    assert set(grouped) == {"old", "new"}
    _, old_rows = table(grouped["old"], BENCHES)
    _, new_rows = table(grouped["new"], BENCHES)
    assert [r["average"] for r in old_rows] == [15.0]
    assert new_rows[0]["average"] == 80.0 and new_rows[1]["average"] is None   # MMVet missing: no average
    # a model's table holds only its own strategies and scores
    assert [r["strategy"] for r in old_rows] == ["direct"]
    assert "| direct | 70.0 | 90.0 | 80.0 |" in markdown(*table(grouped["new"], BENCHES))


def test_the_plot_uses_the_benchmarks_every_strategy_has():
    rows = [{"strategy": "direct", "MMStar": 50.0, "MMVet": 10.0, "average": 30.0},
            {"strategy": "stage_beam_2", "MMStar": 60.0, "MMVet": None, "average": None},
            {"strategy": "stage_beam_4", "MMStar": 70.0, "MMVet": None, "average": None}]
    lines, common = beam_lines(rows, BENCHES)
    assert common == ["MMStar"]
    assert lines == {"stage_beam": [(1, 50.0), (2, 60.0), (4, 70.0)]}
    assert beam_plot_png(rows, BENCHES).startswith(b"\x89PNG")


def test_overlapping_lines_both_drawn_with_markers_and_axis_labelled_in_plain_numbers():
    matplotlib = pytest.importorskip("matplotlib")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [{"strategy": "direct", "MMStar": 50.0, "average": 50.0},
            {"strategy": "best_of_n_2", "MMStar": 55.0, "average": 55.0},
            {"strategy": "stage_beam_2", "MMStar": 55.0, "average": 55.0}]
    captured = {}
    real_close = plt.close
    plt.close = lambda fig=None: captured.setdefault("fig", fig)
    try:
        beam_plot_png(rows, ["MMStar"])
    finally:
        plt.close = real_close
    ax = captured["fig"].axes[0]
    drawn = [line for line in ax.get_lines() if line.get_label() in ("best_of_n", "stage_beam")]
    assert len(drawn) == 2 and all(line.get_marker() not in (None, "None", "") for line in drawn)
    xs = [tuple(line.get_xdata()) for line in drawn]
    assert xs[0] != xs[1]                          # a small offset keeps identical lines apart
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1", "2", "4", "8"]
    real_close(captured["fig"])
