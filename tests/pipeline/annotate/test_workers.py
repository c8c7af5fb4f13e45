"""Several client processes sharing the cache and the budget (pipeline.annotate.workers)."""
import pyarrow.parquet as pq
import pytest

from pipeline.annotate.backends import TeacherUnusable
from pipeline.annotate.budget import SharedBudget
from pipeline.annotate.images import SourceImages
from pipeline.annotate.partition import annotate_partition
from pipeline.storage import Root
from tests.pipeline.annotate.conftest import close, make_annotator, write_toy_source


def two_process_annotator(fake, tmp_path, src, **settings):
    ann = make_annotator(fake, tmp_path, src, client_processes=2, min_turns_per_process=10, **settings)
    images = SourceImages(src)
    ann.load_image = images.load  # picklable: the workers rebuild it
    return ann


def test_two_processes_share_the_work_the_cache_and_the_budget(fake, tmp_path):
    src, sub = write_toy_source(tmp_path, 40)  # 50 turns
    ann = two_process_annotator(fake, tmp_path, src)
    progress = []
    ann.on_progress = lambda stats, total: progress.append((stats.done, total))
    try:
        assert ann._processes_for(50) == 2 and ann.worker_spec() is not None
        summary = annotate_partition("toy", sub, src, Root(str(tmp_path / "out")), ann, log=lambda *_: None)
    finally:
        close(ann)
    rows = pq.read_table(summary.annotations_path).to_pylist()
    assert len(rows) == 50 and {r["status"] for r in rows} == {"ok"}
    assert summary.stats["calls"] == fake.stats()["received"] == 50 and summary.stats["done"] == 50
    assert fake.stats()["answered_twice"] == []
    assert progress and progress[-1] == (50, 50)
    budget = SharedBudget(tmp_path / "rate.sqlite")
    try:  # both processes booked into the one ledger
        assert budget.requests_by_state()["paid"][0] == 50
        assert budget.spent()["paid"] == pytest.approx(summary.stats["spent_usd"], abs=1e-5)
    finally:
        budget.close()


def test_a_dead_account_in_one_worker_stops_them_all(fake, tmp_path):
    src, sub = write_toy_source(tmp_path, 40)
    fake.configure(insufficient_quota=1.0)
    ann = two_process_annotator(fake, tmp_path, src, max_concurrency=4)
    try:
        with pytest.raises(TeacherUnusable, match="no quota left"):
            annotate_partition("toy", sub, src, Root(str(tmp_path / "out")), ann, log=lambda *_: None)
    finally:
        close(ann)
    assert fake.stats()["requests"] <= 4 + 2


def test_image_callables_that_do_not_pickle_keep_it_in_one_process(fake, tmp_path):
    src, _ = write_toy_source(tmp_path, 4)
    ann = make_annotator(fake, tmp_path, src, client_processes=2, min_turns_per_process=1)  # load_image: a closure
    try:
        assert ann.worker_spec() is None
    finally:
        close(ann)
