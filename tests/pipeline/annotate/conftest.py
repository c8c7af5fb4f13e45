import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from pipeline import schema
from pipeline.annotate.annotator import Annotator, TeacherSettings
from pipeline.annotate.backends import OpenAIBackend
from pipeline.annotate.budget import SharedBudget
from pipeline.annotate.cache import RequestCache
from pipeline.storage import Root
from tests.fakes.openai_server import FakeOpenAI

API_KEY = "sk-test-0123456789abcdefSECRET"


def sample_rows(n: int) -> list[dict]:
    """n canonical rows mixing multiple choice, numbers, short text and a two-turn conversation."""
    rows = []
    for i in range(n):
        kind = i % 4
        if kind == 0:
            q, a, opts = f"Which shape is number {i}?", "B", ["circle", "square", "triangle", "star"]
        elif kind == 1:
            q, a, opts = f"How many dots are in panel {i}?", str(i % 7 + 1), []
        elif kind == 2:
            q, a, opts = f"What colour is object {i}?", "red", []
        else:
            q, a, opts = f"Is there a cube in scene {i}?", "yes", []
        conv = [{"from": "human", "value": f"<image>\n{q}"}, {"from": "gpt", "value": a}]
        if kind == 3:
            conv += [{"from": "human", "value": "And how many cubes?"}, {"from": "gpt", "value": "2"}]
        rows.append({"id": f"toy/{i}", "source": "toy", "split": "train", "image_path": f"img/{i % 3}.png",
                     "question": q, "answer": a, "options": opts, "hints": [], "conversations": conv, "meta": "{}"})
    return rows


def write_toy_source(tmp_path, n_rows: int = 12):
    """A source root with three images and a subsample table of n rows (n + n/4 assistant turns)."""
    src = tmp_path / "src"
    (src / "img").mkdir(parents=True)
    for i, colour in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        buf = io.BytesIO()
        Image.new("RGB", (64, 48), colour).save(buf, format="PNG")
        (src / "img" / f"{i}.png").write_bytes(buf.getvalue())
    sub = tmp_path / "subsample.parquet"
    pq.write_table(pa.Table.from_pylist(sample_rows(n_rows), schema=schema.SAMPLE), sub)
    return Root(str(src)), str(sub)


@pytest.fixture
def toy_source(tmp_path):
    return write_toy_source(tmp_path, 12)


@pytest.fixture
def fake():
    with FakeOpenAI(retry_after=0.05, timeout_hold=1.0) as server:
        yield server


def make_annotator(fake_server, folder, source_root, max_spend_usd=None, prices=None, budget_path=None,
                   timeout_s=5.0, **settings):
    """An annotator on the real openai client against the fake server, with its own cache and a
    budget file (`folder`/rate.sqlite unless given; `max_spend_usd`: the spending cap across
    every run sharing that file)."""
    backend = OpenAIBackend(API_KEY, fake_server.base_url, timeout_s=timeout_s)
    cache = RequestCache(folder / "requests.sqlite")
    budget = SharedBudget(budget_path or folder / "rate.sqlite", rpm=1_000_000, tpm=10**10, cap_usd=max_spend_usd)
    defaults = dict(max_concurrency=16, backoff_base_s=0.01, backoff_cap_s=0.05, max_call_retries=10)
    defaults.update(settings)

    def load(rel):
        with source_root.open(rel, "rb") as f:
            return f.read()

    return Annotator(backend, cache, TeacherSettings(**defaults), load_image=load, budget=budget, prices=prices)


def close(annotator) -> None:
    annotator.cache.close()
    if annotator.budget is not None:
        annotator.budget.close()
