"""The search's own decoder pass (`runner.py`) computes what the model's `forward` computes: the
prompt with its image, decoding steps of several rows at different positions, a text-only row,
and log-probabilities of chosen continuations."""
import pytest

torch = pytest.importorskip("torch")

from pipeline.search.core import GenerationCore  # noqa: E402
from pipeline.search.runner import MllamaRunner  # noqa: E402


def _inputs(core, image, text):
    return core.encode_prompt(image, text)


def _hf_logits(model, inputs, extra=()):
    ids = inputs["input_ids"]
    if extra:
        ids = torch.cat([ids, torch.tensor([list(extra)])], dim=1)
    kw = {k: v for k, v in inputs.items() if k not in ("input_ids", "attention_mask", "cross_attention_mask")}
    if "cross_attention_mask" in inputs:
        xm = inputs["cross_attention_mask"]
        kw["cross_attention_mask"] = torch.cat([xm, xm[:, -1:].expand(-1, len(extra), -1, -1)], dim=1) if extra else xm
    with torch.inference_mode():
        return model(input_ids=ids, attention_mask=torch.ones_like(ids), **kw).logits[0].float()


def test_prefill_and_decode_match_the_models_forward(tiny, image):
    model, processor = tiny
    core = GenerationCore(model, processor)
    runner = MllamaRunner(model, rows=4, length=64)
    inputs = _inputs(core, image, "How many red cubes are there?")
    ids = inputs["input_ids"][0].tolist()
    rows = runner.alloc(2)
    for r in rows:
        runner.set_image(r, inputs, ids.index(core.image_token_id))
    got = runner.forward(torch.tensor([ids, ids]), rows, [0, 0])
    want = _hf_logits(model, inputs)[-1]
    assert torch.allclose(got[0], want, atol=1e-4) and torch.allclose(got[1], want, atol=1e-4)
    # two decoding steps; row 1 one token behind row 0 (rows at their own positions)
    extra = [5, 9, 11]
    runner.decode(torch.tensor([extra[0], extra[0]]), rows, torch.tensor([len(ids), len(ids)]))
    step = runner.decode(torch.tensor([extra[1]]), rows[:1], torch.tensor([len(ids) + 1]))
    assert torch.allclose(step[0], _hf_logits(model, inputs, extra[:2])[-1], atol=1e-4)
    step = runner.decode(torch.tensor([extra[2], extra[1]]), rows, torch.tensor([len(ids) + 2, len(ids) + 1]))
    assert torch.allclose(step[0], _hf_logits(model, inputs, extra)[-1], atol=1e-4)
    assert torch.allclose(step[1], _hf_logits(model, inputs, extra[:2])[-1], atol=1e-4)


def test_a_text_only_row_matches_the_models_text_only_forward(tiny):
    model, processor = tiny
    core = GenerationCore(model, processor)
    inputs = _inputs(core, None, "How many red cubes are there?")
    assert "pixel_values" not in inputs
    ids = inputs["input_ids"][0].tolist()
    runner = MllamaRunner(model, rows=2, length=64)
    [row] = runner.alloc(1)
    runner.set_image(row, None, None)
    got = runner.forward(torch.tensor([ids]), [row], [0])
    assert torch.allclose(got[0], _hf_logits(model, inputs)[-1], atol=1e-4)


def test_log_probabilities_of_a_continuation(tiny, image):
    model, processor = tiny
    core = GenerationCore(model, processor)
    inputs = _inputs(core, image, "Is it red?")
    ids = inputs["input_ids"][0].tolist()
    cont = [7, 3, 12]
    runner = MllamaRunner(model, rows=2, length=64)
    [row] = runner.alloc(1)
    runner.set_image(row, inputs, ids.index(core.image_token_id))
    full = ids + cont
    targets = [[(len(ids) - 1 + i, t) for i, t in enumerate(cont)]]
    [lp] = runner.token_logprobs(torch.tensor([full]), [row], [0], targets)
    ref = torch.log_softmax(_hf_logits(model, inputs, cont), -1)
    want = sum(float(ref[len(ids) - 1 + i, t]) for i, t in enumerate(cont))
    assert lp == pytest.approx(want, abs=1e-4)


def test_the_arena_grows_without_losing_rows(tiny, image):
    model, processor = tiny
    core = GenerationCore(model, processor)
    inputs = _inputs(core, image, "Is it red?")
    ids = inputs["input_ids"][0].tolist()
    runner = MllamaRunner(model, rows=1, length=8)
    [row] = runner.alloc(1)
    runner.set_image(row, inputs, ids.index(core.image_token_id))
    runner.forward(torch.tensor([ids]), [row], [0])
    more = runner.alloc(3)                      # grows the rows
    assert runner.R >= 4 and row not in more
    step = runner.decode(torch.tensor([4]), [row], torch.tensor([len(ids)]), window=len(ids) + 200)
    assert torch.allclose(step[0], _hf_logits(model, inputs, [4])[-1], atol=1e-4)


def test_the_captured_decode_step_matches_eager_decoding_and_keeps_its_inputs_alive(tiny, image, monkeypatch):
    """The CUDA-graph branch of `decode` (rows [0, B) padded to a power of two, static input buffers,
    the bucket's free rows writing at the scratch position), run on the CPU with a stand-in graph
    whose replay runs the captured step again on the static buffers: the same logits and caches as
    eager decoding. And every tensor the step reads outlives the capture (a real replay reads them
    by address: one freed and reused would send the keys/values to the wrong rows)."""
    import contextlib
    import gc
    import weakref

    model, processor = tiny
    core = GenerationCore(model, processor)
    inputs = _inputs(core, image, "How many red cubes are there?")
    ids = inputs["input_ids"][0].tolist()
    graphed, eager = MllamaRunner(model, rows=4, length=64), MllamaRunner(model, rows=4, length=64)
    for runner in (graphed, eager):
        rows = runner.alloc(3)
        for r in rows:
            runner.set_image(r, inputs, ids.index(core.image_token_id))
        runner.forward(torch.tensor([ids] * 3), rows, [0, 0, 0])
    assert rows == [0, 1, 2] and graphed.free == [3]

    read = []   # the row indices and positions the captured step reads (its token ids are a view of
    plain = graphed.hidden_states   # the graph's own buffer, made anew at each call)

    def recording(ids, rows, start, *args, **kwargs):
        read.extend(weakref.ref(t) for t in (rows, start))
        return plain(ids, rows, start, *args, **kwargs)

    class Stream:
        def wait_stream(self, other):
            pass

    class Graph:
        def replay(self):
            for g in graphed.graphs.values():
                if g.graph is self:
                    g.logits.copy_(g.step())

    monkeypatch.setattr(graphed, "hidden_states", recording)
    for name, fake in (("Stream", Stream), ("current_stream", lambda *a: Stream()), ("CUDAGraph", Graph),
                       ("stream", lambda s: contextlib.nullcontext()), ("graph", lambda g, **k: contextlib.nullcontext())):
        monkeypatch.setattr(torch.cuda, name, fake)
    graphed.cuda_graphs = True

    n = len(ids)
    for tokens, positions in (([5, 9, 11], [n, n, n]), ([7, 3, 2], [n + 1, n + 1, n]), ([4, 4, 4], [n + 2, n + 2, n + 1])):
        got = graphed.decode(torch.tensor(tokens), rows, torch.tensor(positions))
        want = eager.decode(torch.tensor(tokens), rows, torch.tensor(positions))
        assert set(graphed.graphs) == {4} and graphed.cuda_graphs
        assert got.shape == want.shape == (3, want.shape[1]) and torch.allclose(got, want, atol=1e-5)
    for i, (k, v) in graphed.kv.items():     # the caches agree except at the scratch position
        assert torch.allclose(k[:3, :, :-1], eager.kv[i][0][:3, :, :-1], atol=1e-5)
        assert torch.allclose(v[:3, :, :-1], eager.kv[i][1][:3, :, :-1], atol=1e-5)
    gc.collect()
    assert read and all(r() is not None for r in read)
