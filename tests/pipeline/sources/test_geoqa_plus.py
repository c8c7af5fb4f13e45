"""GeoQA+ reader: both released forms, the restricted unpickler, images rendered once, broken inputs."""
import io
import json
import re
import pickle

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline.demo import write_source
from pipeline.fingerprint import fingerprint
from pipeline.ingest import ingest_source
from pipeline.sources import SourceLayoutError, get_reader
from pipeline.sources.geoqa_plus import AUXILIARY_PICKLES, array_key, UnsafePickleError, answer_letter, safe_load, split_prompt
from pipeline.storage import Root


def ingest(tmp_path, src, out="out"):
    out = Root(str(tmp_path / out))
    summary = ingest_source("geoqa_plus", src, out, derived=Root(str(tmp_path / "derived")))
    rows = pq.read_table(out.path("samples.parquet")).to_pylist()
    rejects = pq.read_table(out.path("quarantine.parquet")).to_pylist()
    return summary, {r["id"]: r for r in rows}, rejects


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("geoqa")
    src = Root(str(tmp / "src"))
    planted = write_source("geoqa_plus", src, seed=0)
    return (tmp, src, planted) + ingest(tmp, src)


def test_demo_rows_and_known_values(demo):
    _, _, _, summary, rows, _ = demo
    assert summary.rows == 24
    assert summary.splits == {"train": 18, "val": 3, "test": 3}
    # the Geo170K form: the released conversation kept, the letter as the answer
    r = rows["geoqa_plus/qa_tuning/0"]
    assert r["split"] == "train"
    assert r["image_path"] == "images/geoqa_plus/1787.png"
    assert r["question"] == ("As shown in the figure, in triangle ABC, angle A = 55°, angle B = 75°, then the degree "
                             "of angle C is ()")
    assert r["options"] == ["130°", "50°", "60°", "40°"]
    assert r["answer"] == "B"
    assert json.loads(r["meta"])["answer_text"] == "50°"
    assert r["hints"] == []
    assert [t["from"] for t in r["conversations"]] == ["human", "gpt"]
    assert r["conversations"][0]["value"].startswith("<image>\nFirst perform reasoning")
    assert r["conversations"][0]["value"].endswith("Choices:\nA:130°\nB:50°\nC:60°\nD:40°")
    assert r["conversations"][1]["value"].endswith("Therefore, the answer is option B.\nAnswer:B")
    # the original form: Chinese subject, rendered diagram, options from `choices`
    p = rows["geoqa_plus/GeoQA2.2/dev/1007"]
    assert p["split"] == "val"
    assert re.fullmatch(r"_derived/png/[0-9a-f]{64}\.png", p["image_path"])  # named by the array's content
    assert p["question"] == "如图，点A、B、C都在⊙O上，∠AOB=100°，则∠ACB的度数为（）"
    assert p["options"] == ["50°", "40°", "130°", "100°"] and p["answer"] == "A"
    assert p["conversations"] == [
        {"from": "human", "value": "<image>\n" + p["question"] + "\nOptions:\nA. 50°\nB. 40°\nC. 130°\nD. 100°"},
        {"from": "gpt", "value": "A"}]
    meta = json.loads(p["meta"])
    assert meta["answer_text"] == "50°" and meta["label"] == 0 and meta["manual_program"] == ["g_half", "N_0"]
    # the Geometry3K row of Geo170K is neither a row nor a reject
    assert not any("geo3k" in (r["image_path"] or "") for r in rows.values())


def test_quarantine_is_exactly_the_planted_rows(demo):
    _, _, planted, _, _, rejects = demo
    assert {(r["native_id"], r["reason"]) for r in rejects} == {(p.native_id, p.reason) for p in planted}
    assert len(rejects) == len(planted)
    assert {p.reason for p in planted} == {"missing_image", "unreadable_image", "malformed_record", "empty_question",
                                           "no_image", "bad_option_index", "duplicate_id", "unsafe_file"}
    unsafe = [r for r in rejects if r["reason"] == "unsafe_file"]
    assert unsafe[0]["location"] == "GeoQA2.2/other.pk" and "datetime.date" in unsafe[0]["detail"]


def test_rendered_images_match_the_arrays_and_are_written_once(demo):
    tmp, src, _, _, rows, _ = demo
    with src.open("GeoQA2.2/dev.pk") as f:
        records = {r["id"]: r for r in safe_load(f)}
    derived = Root(str(tmp / "derived"))
    rel = rows["geoqa_plus/GeoQA2.2/dev/1007"]["image_path"][len("_derived/"):]
    assert rel == f"png/{array_key(records[1007]['image'])}.png"
    with derived.open(rel) as f:
        png = np.asarray(Image.open(f))
    assert np.array_equal(png, records[1007]["image"])
    assert not src.exists("_derived")  # nothing is written into the raw folder
    before = derived.fs.info(derived.path(rel))["mtime"]
    print_before = fingerprint(src)
    _, rows2, _ = ingest(tmp, src, out="again")
    assert rows2.keys() == rows.keys()
    assert derived.fs.info(derived.path(rel))["mtime"] == before  # not rendered again
    assert fingerprint(src) == print_before


def test_same_seed_same_bytes(tmp_path):
    a, b, c = (Root(str(tmp_path / n)) for n in "abc")
    write_source("geoqa_plus", a, seed=0)
    write_source("geoqa_plus", b, seed=0)
    write_source("geoqa_plus", c, seed=1)
    files_a = dict(a.walk_files())
    assert files_a.keys() == dict(b.walk_files()).keys()
    assert "GeoQA2.2/train.pk" in files_a and "qa_tuning.json" in files_a
    for rel in files_a:
        with a.open(rel) as fa, b.open(rel) as fb:
            assert fa.read() == fb.read(), rel
    with a.open("GeoQA2.2/train.pk") as fa, c.open("GeoQA2.2/train.pk") as fc:
        assert fa.read() != fc.read()


def test_missing_folder_and_wrong_layout(tmp_path):
    reader = get_reader("geoqa_plus")
    with pytest.raises(SourceLayoutError, match="qa_tuning.json"):
        reader.check_layout(Root(str(tmp_path / "nowhere")))
    (tmp_path / "wrong" / "images" / "geoqa_plus").mkdir(parents=True)
    (tmp_path / "wrong" / "qa.json").write_text("[]")
    with pytest.raises(SourceLayoutError, match=r"'qa_tuning\.json' or '\*\.pk'"):
        reader.check_layout(Root(str(tmp_path / "wrong")))


# ---- the restricted unpickler ---------------------------------------------------------------------

def _os_system_pickle(marker):
    return f"cos\nsystem\n(S'touch {marker}'\ntR.".encode()


def test_unpickler_refuses_code_and_keeps_arrays(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(UnsafePickleError, match="os.system"):
        safe_load(io.BytesIO(_os_system_pickle(marker)))
    assert not marker.exists()
    for payload in (b"cbuiltins\neval\n(S'1+1'\ntR.", b"cbuiltins\ngetattr\n.", b"cnumpy\nload\n.",
                    b"csubprocess\ncall\n."):
        with pytest.raises(UnsafePickleError):
            safe_load(io.BytesIO(payload))
    data = [{"id": 1, "image": np.arange(12, dtype=np.uint8).reshape(3, 4), "label": np.int64(2),
             "numbers": (1.5, np.float32(2.0))}]
    for protocol in (2, 3, 4, 5):
        back = safe_load(io.BytesIO(pickle.dumps(data, protocol=protocol)))
        assert np.array_equal(back[0]["image"], data[0]["image"]) and back[0]["label"] == 2
    # pickles written by numpy 1.x name numpy.core.multiarray: accepted the same
    old = pickle.dumps(data, protocol=2).replace(b"numpy._core.multiarray", b"numpy.core.multiarray")
    assert b"numpy.core.multiarray" in old
    assert np.array_equal(safe_load(io.BytesIO(old))[0]["image"], data[0]["image"])


def _problem(ident, **kw):
    rec = {"id": ident, "subject": "如图，∠A=50°，则∠B为（）", "choices": ["40°", "50°", "60°", "70°"],
           "choice_nums": [40.0, 50.0, 60.0, 70.0], "label": 1, "image": np.full((20, 30), 200, dtype=np.uint8),
           "manual_program": ["g_equal", "N_0"]}
    rec.update(kw)
    return rec


def test_pickle_form_broken_files(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    marker = tmp_path / "pwned"
    (src / "evil.pk").write_bytes(_os_system_pickle(marker))
    (src / "truncated.pk").write_bytes(pickle.dumps([_problem(1)], protocol=4)[:50])
    (src / "adict.pk").write_bytes(pickle.dumps({"1": "angle"}, protocol=4))
    (src / "sub_dataset_dict.pk").write_bytes(pickle.dumps({1: "angle"}, protocol=4))  # auxiliary: ignored
    no_choices = _problem(4)
    del no_choices["choices"]  # choice_nums stand in
    (src / "new-test.pk").write_bytes(pickle.dumps(
        [_problem(3), no_choices, _problem(5, image=np.zeros((2, 2, 7))), "junk", _problem("a/b", label=np.int64(3))],
        protocol=4))
    summary, rows, rejects = ingest(tmp_path, Root(str(src)))
    assert not marker.exists()
    assert sorted(rows) == ["geoqa_plus/new-test/3", "geoqa_plus/new-test/4", "geoqa_plus/new-test/a_b"]
    assert rows["geoqa_plus/new-test/3"]["split"] == "test"
    assert rows["geoqa_plus/new-test/4"]["options"] == ["40", "50", "60", "70"]
    assert rows["geoqa_plus/new-test/a_b"]["answer"] == "D"
    assert rows["geoqa_plus/new-test/a_b"]["image_path"].startswith("_derived/png/")
    got = sorted((r["native_id"] or "", r["reason"], r["location"]) for r in rejects)
    assert summary.skipped == [{"location": "sub_dataset_dict.pk", "reason": AUXILIARY_PICKLES["sub_dataset_dict.pk"],
                                "rows": 0}]
    assert got == [
        ("", "malformed_record", "new-test.pk#3"),
        ("", "unreadable_file", "truncated.pk"),
        ("", "unsafe_file", "evil.pk"),
        ("", "wrong_shape", "adict.pk"),
        ("new-test/5", "unreadable_image", "new-test.pk#2"),
    ]


def _llava_row(image, human, gpt):
    return {"image": image, "conversations": [{"from": "human", "value": human}, {"from": "gpt", "value": gpt}]}


def test_llava_form_parsing(tmp_path):
    src = tmp_path / "src"
    (src / "images" / "geoqa_plus").mkdir(parents=True)
    Image.new("L", (10, 10), 255).save(src / "images" / "geoqa_plus" / "7.png")
    q = "<image>\nFirst perform reasoning.\nQuestion: Find angle B.\nChoices:\nA:30°\nB:40°\nC:50°\nD:60\n°"
    rows = [
        _llava_row("geoqa_plus/7.png", q, "Angle B is 50°.\nAnswer: (C)"),
        _llava_row("geoqa_plus/7.png", q, "Thus the answer is option B, as angle B is 40°."),
        _llava_row("geo3k/train/1/img_diagram.png", q, "Answer:A"),  # another dataset: passed over
        _llava_row("geoqa_plus/7.png", "<image>\nQuestion: What is AB?", "AB = 5.\nAnswer: 5"),  # no choices
        _llava_row(7, q, "Answer:A"),
        [1, 2],
    ]
    (src / "qa_tuning.json").write_text(json.dumps(rows))
    _, got, rejects = ingest(tmp_path, Root(str(src)))
    assert sorted(got) == ["geoqa_plus/qa_tuning/0", "geoqa_plus/qa_tuning/1", "geoqa_plus/qa_tuning/3"]
    a = got["geoqa_plus/qa_tuning/0"]
    assert a["question"] == "Find angle B." and a["answer"] == "C"
    assert a["options"] == ["30°", "40°", "50°", "60 °"]  # a choice wrapped over two lines is joined
    assert got["geoqa_plus/qa_tuning/1"]["answer"] == "B"
    free = got["geoqa_plus/qa_tuning/3"]
    assert free["options"] == [] and free["answer"] == "5" and free["question"] == "What is AB?"
    assert sorted((r["native_id"], r["reason"]) for r in rejects) == [
        ("qa_tuning/4", "malformed_record"), ("qa_tuning/5", "malformed_record")]
    # a qa_tuning.json that is not JSON: one reject, not a crash
    (src / "qa_tuning.json").write_text("[{\"image\": ")
    _, got2, rejects2 = ingest(tmp_path, Root(str(src)), out="out2")
    assert got2 == {} and [(r["native_id"], r["reason"]) for r in rejects2] == [(None, "unreadable_file")]


def test_answer_helpers():
    assert answer_letter("... so the answer is C.\nAnswer:C") == "C"
    assert answer_letter("Answer: D.") == "D"
    assert answer_letter("No letter here.") is None
    stem, options = split_prompt("<image>\nQuestion:As shown, x = ()\nChoices:\nA:1\nB:2")
    assert stem == "As shown, x = ()" and options == ["1", "2"]


def test_geoqa3_json_form_and_precedence(tmp_path):
    src = tmp_path / "src"
    (src / "GeoQA3" / "json").mkdir(parents=True)
    (src / "GeoQA3" / "image").mkdir()
    Image.new("L", (10, 10), 255).save(src / "GeoQA3" / "image" / "5.png")
    (src / "GeoQA3" / "json" / "5.json").write_text(json.dumps(
        {"id": 5, "subject": "如图，求∠1（）", "choices": ["20°", "30°", "40°", "50°"], "label": 2}, ensure_ascii=False))
    (src / "GeoQA3" / "json" / "6.json").write_text("{not json")
    (src / "GeoQA3" / "json" / "7.json").write_text(json.dumps({"id": 7, "subject": "x", "choices": ["1", "2"],
                                                                 "label": 5}))
    _, rows, rejects = ingest(tmp_path, Root(str(src)))
    r = rows["geoqa_plus/GeoQA3/5"]
    assert r["split"] == "unassigned" and r["image_path"] == "GeoQA3/image/5.png"
    assert r["answer"] == "C" and json.loads(r["meta"])["answer_text"] == "40°"
    assert sorted((x["native_id"] or "", x["reason"]) for x in rejects) == [
        ("", "unreadable_file"), ("GeoQA3/7", "bad_option_index")]
    # with the pickles present, the GeoQA3/json copy of the same problems is not read again
    (src / "train.pk").write_bytes(pickle.dumps([_problem(5)], protocol=4))
    _, rows2, rejects2 = ingest(tmp_path, Root(str(src)), out="out2")
    assert sorted(rows2) == ["geoqa_plus/train/5"] and rejects2 == []
