"""Property-based fuzzing of every reader on files in its dataset's real format: records with wrong
types, values nested 1,000 levels deep, huge strings and integers, files cut short, invalid UTF-8,
a top level of the wrong shape, corrupt pickles. Whatever the input: no crash, and nothing lost
silently (every record is a row or a quarantined entry with a reason)."""
from __future__ import annotations

import io
import json
import pickle
import shutil
import sys
import tempfile
import zipfile
from pathlib import Path

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.ingest import ingest_source
from pipeline.quarantine import REASONS
from pipeline.storage import Root
from tests.pipeline.sources import trees

EXAMPLES = 10
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])

# source -> (tree builder, records file relative to the folder given, zip member or None, container key, kind)
JSON_CASES = {
    "sharegpt4v": (trees.sharegpt4v, "ShareGPT4V/data/sharegpt4v/sharegpt4v_instruct_gpt4-vision_cap100k.json",
                   None, None, "array"),
    "chartqa": (trees.chartqa, "ChartQA/ChartQA Dataset/train/train_human.json", None, None, "array"),
    "aokvqa": (trees.aokvqa, "datasets/aokvqa/aokvqa_v1p0_train.json", None, None, "array"),
    "docvqa": (trees.docvqa, "docvqa/spdocvqa_qas/train_v1.0_withQT.json", None, "data", "array"),
    "pisc": (trees.pisc, "PISC/annotation_image_info.json", None, None, "array"),
    "clevr": (trees.clevr, "extracted/CLEVR_v1.0/questions/CLEVR_val_questions.json", None, "questions", "array"),
    "clevr_math": (trees.clevr_math, "clevr-math/data/clevr-math.zip", "clevr-math-train.json", "questions", "array"),
    "geoqa_plus": (trees.geo170k, "Geo170K/qa_tuning.json", None, None, "array"),
    "ai2d": (trees.ai2d, "ai2d/questions/0.png.json", None, "questions", "object"),
    "scienceqa": (trees.scienceqa, "ScienceQA/data/scienceqa/problems.json", None, None, "object"),
}
_BUILT: dict[str, tuple[Path, dict]] = {}


def built(source: str) -> tuple[Path, dict]:
    """The source's tree, built once, and its ingest result before any mutation."""
    key = source
    if key not in _BUILT:
        top = Path(tempfile.mkdtemp(prefix=f"fuzz-{source}-"))
        tree = JSON_CASES[source][0](top / "raw") if source in JSON_CASES else trees.geoqa_plus(top / "raw")
        source = "geoqa_plus" if source == "geoqa_plus_pickles" else source
        folder = next(iter(tree.folders.values()))
        _BUILT[key] = (top, {"folder": folder.relative_to(top / "raw"), "baseline": run(source, top / "raw",
                                                                                           folder, top / "out")})
    return _BUILT[key]


def run(source, raw_top, folder, out_dir):
    summary = ingest_source(source, Root(str(folder)), Root(str(out_dir)), derived=Root(str(out_dir / "derived")))
    rejects = pq.read_table(Root(str(out_dir)).path("quarantine.parquet")).to_pylist()
    for r in rejects:
        assert r["reason"] in REASONS and r["detail"].strip(), r
    passed_over = sum(s["rows"] for s in summary.skipped)  # records of other datasets (Geo170K's Geometry3K)
    return summary.rows + sum(summary.quarantined_rows.values()) + passed_over, rejects, summary


BROKEN = {"unreadable_file", "wrong_shape", "malformed_record"}
DEEP = "[" * 1000 + "]" * 1000
values = st.one_of(
    st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=12), st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
    st.just("__DEEP__"), st.just("x" * 1_000_000), st.just(10**30),
)
mutations = st.one_of(
    st.tuples(st.just("replace"), st.integers(0, 10**6), st.integers(0, 10**6), values),
    st.tuples(st.just("truncate"), st.floats(0.0, 0.99)),
    st.tuples(st.just("bad_utf8"), st.floats(0.0, 1.0)),
    st.tuples(st.just("wrap"), st.sampled_from(["list", "object"])),
)


def _container(doc, key):
    return doc if key is None else doc[key]


def mutate(text: str, key, kind: str, mutation) -> bytes:
    what = mutation[0]
    data = text.encode("utf-8")
    if what == "truncate":
        return data[: int(len(data) * mutation[1])]
    if what == "bad_utf8":
        at = int(len(data) * mutation[1])
        return data[:at] + b"\xff\xfe\xc3" + data[at:]
    if what == "wrap":
        return b"[" + data + b"]" if mutation[1] == "list" else b'{"wrapped": ' + data + b"}"
    _, i, j, value = mutation
    doc = json.loads(text)
    records = _container(doc, key)
    names = list(records) if kind == "object" else list(range(len(records)))
    target = names[i % len(names)]
    record = records[target]
    marker = "__MUTATION__"
    if isinstance(record, dict) and record and j % 3:  # a field of the record
        fields = sorted(record)
        record[fields[j % len(fields)]] = marker
    else:  # the record itself
        records[target] = marker
    encoded = DEEP if value == "__DEEP__" else json.dumps(value)
    return json.dumps(doc, ensure_ascii=False).replace(json.dumps(marker), encoded).encode("utf-8")


@pytest.mark.parametrize("source", sorted(JSON_CASES))
@FUZZ
@given(mutation=mutations)
def test_mutated_records_and_files_are_quarantined_never_a_crash(source, mutation):
    top, info = built(source)
    builder, rel, member, key, kind = JSON_CASES[source]
    base_count, base_rejects, _ = info["baseline"]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        shutil.copytree(top / "raw", raw, symlinks=True)
        path = raw / rel
        if member:
            with zipfile.ZipFile(path) as zf:
                files = {n: zf.read(n) for n in zf.namelist()}
            files[member] = mutate(files[member].decode(), key, kind, mutation)
            with zipfile.ZipFile(path, "w") as zf:
                for n, d in files.items():
                    zf.writestr(n, d)
        else:
            path.write_bytes(mutate(path.read_text(encoding="utf-8"), key, kind, mutation))
        count, rejects, summary = run(source, raw, raw / info["folder"], Path(tmp) / "out")
    if mutation[0] == "replace":  # still the right shape: every record is a row or a reject
        assert count >= base_count, (mutation[0], count, base_count)
    else:  # a broken file: said so, by a quarantined entry for that file
        name = member or Path(rel).name
        assert any(name in r["location"] and r["reason"] in BROKEN for r in rejects), (mutation[0], rejects)


@FUZZ
@given(mutation=st.one_of(
    st.tuples(st.just("field"), st.integers(0, 100), st.sampled_from(
        ["id", "subject", "choices", "choice_nums", "label", "image"]), values),
    st.tuples(st.just("truncate"), st.floats(0.0, 0.99)),
))
def test_mutated_geoqa_pickles_are_quarantined_never_a_crash(mutation):
    top, info = built("geoqa_plus_pickles")
    base_count = info["baseline"][0]
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "raw"
        shutil.copytree(top / "raw", raw)
        path = raw / "GeoQA+" / "data" / "GeoQA2.2" / "Mix-train.pk"
        data = path.read_bytes()
        if mutation[0] == "truncate":
            path.write_bytes(data[: int(len(data) * mutation[1])])
        else:
            problems = pickle.loads(data)
            value = mutation[3]
            if value == "__DEEP__":
                value = nested = []
                for _ in range(999):
                    nested.append([])
                    nested = nested[0]
            problems[mutation[1] % len(problems)][mutation[2]] = value
            limit = sys.getrecursionlimit()
            sys.setrecursionlimit(max(limit, 5000))  # only to write the deep pickle; loading it needs no recursion
            try:
                buf = io.BytesIO()
                pickle.dump(problems, buf, protocol=4)
            finally:
                sys.setrecursionlimit(limit)
            path.write_bytes(buf.getvalue())
        count, rejects, _ = run("geoqa_plus", raw, raw / info["folder"], Path(tmp) / "out")
    if mutation[0] == "field":
        assert count >= base_count
    else:
        assert any(r["location"].endswith("Mix-train.pk") for r in rejects) or count >= base_count


def test_fuzz_fixtures_read_cleanly_before_mutation():
    for source in sorted(JSON_CASES) + ["geoqa_plus_pickles"]:
        count, rejects, summary = built(source)[1]["baseline"]
        assert summary.rows > 0 and [r for r in rejects if r["reason"] != "no_image"] == [], source
