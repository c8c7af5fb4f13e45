"""Metadata as a data engineer reads it in the UI."""
from assets.metadata import preview_table, rounded


def test_floats_are_rounded_in_previews_and_values():
    assert rounded({"a": [0.123456789, 2], "b": 1 / 3}) == {"a": [0.1235, 2], "b": 0.3333}
    assert rounded(0.1 + 0.2) == 0.3 and rounded(0.0000312345) == 0.00003123  # small costs stay non-zero
    assert rounded(12345.678) == 12346.0 and rounded(12.34567) == 12.35
    table = preview_table([{"x": 0.987654321, "meta": {"p": 0.111111111}}], ["x", "meta"])
    (record,) = table.value.records
    assert record.data == {"x": "0.9877", "meta": '{"p": 0.1111}'}
