"""The JSON layer under every reader: what a broken file says, and that no record is lost."""
from __future__ import annotations

import json

import pytest

from pipeline.sources import jsonio
from pipeline.storage import Root


def test_a_byte_that_is_not_utf8_outside_the_records_is_reported_and_no_record_lost(tmp_path):
    """msgspec checks only the strings it decodes: a bad byte in a key beside the records (a
    `dataset_version` of DocVQA's header) still says the file is broken, after every record."""
    folder = tmp_path / "src"
    folder.mkdir()
    body = json.dumps({"dataset_version": "1.0", "data": [{"a": 1}, {"a": 2}]}).encode()
    (folder / "f.json").write_bytes(body.replace(b"dataset_", b"dataset\xff\xfe\xc3_"))
    seen = []
    with pytest.raises(jsonio.FileProblem) as problem:
        for _, record in jsonio.records(Root(str(folder)), "f.json", key="data"):
            seen.append(record)
    assert seen == [{"a": 1}, {"a": 2}]
    assert problem.value.reason == "unreadable_file" and "not UTF-8 near byte 9" in problem.value.detail
