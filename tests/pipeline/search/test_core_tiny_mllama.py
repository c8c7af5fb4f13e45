"""The generation core on a tiny Mllama: the efficient path and the naive (public-code) path choose
the same text under greedy decoding; the N candidates of a step are one batched call over a prefix
encoded once; stops, rollbacks, a separate judge and the command line."""
from __future__ import annotations

import random

import pytest

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.slow

from pipeline.search import SearchConfig, run  # noqa: E402
from pipeline.search.base import Candidate  # noqa: E402
from pipeline.search.core import GenerationCore, NaiveCore  # noqa: E402
from pipeline.search.judge import Judge  # noqa: E402
from pipeline.stages import CLOSE, OPEN, STAGES  # noqa: E402

QUESTION = "How many red cubes are there?"
SMALL = {"summary": 8, "caption": 10, "reasoning": 10, "conclusion": 4}
TINY = {"summary": 5, "caption": 5, "reasoning": 6, "conclusion": 3}


def cores(tiny, **kw):
    model, processor = tiny
    return GenerationCore(model, processor, **kw), NaiveCore(model, processor, **kw)


@pytest.mark.parametrize("strategy,beam", [("stage_beam", 3), ("best_of_n", 2), ("sentence_beam", 2),
                                           ("direct", 1), ("retrace", 2)])
def test_greedy_efficient_and_naive_choose_the_same_text(tiny, image, strategy, beam):
    eff, naive = cores(tiny, greedy=True)
    try:
        cfg = dict(beam=beam, budgets=TINY if strategy == "retrace" else SMALL, greedy=True, sentence_tokens=8, max_sentences=3,
                   n_captions=2, n_reasonings=2, max_retraces=1, cutoff=2.0)   # cutoff 2: always retrace
        a = run(strategy, eff, image, QUESTION, SearchConfig(**cfg))
        b = run(strategy, naive, image, QUESTION, SearchConfig(**cfg))
    finally:
        eff.close(), naive.close()
    assert a.text == b.text and a.text
    assert [(s.kind, s.candidates, s.winner, s.comparisons) for s in a.steps] == \
           [(s.kind, s.candidates, s.winner, s.comparisons) for s in b.steps]
    assert a.stats["vision_calls"] == 1 <= b.stats["vision_calls"]
    assert a.stats["forward_tokens"] <= b.stats["forward_tokens"]
    assert a.stats["forward_tokens"] < b.stats["forward_tokens"] or strategy == "direct"


@pytest.mark.parametrize("kind", ["caption", "reasoning", "answer"])
def test_batched_judge_and_one_by_one_judge_decide_the_same(tiny, image, kind):
    eff, naive = cores(tiny, greedy=True)
    texts = [f"{OPEN.get(kind, '')} {t} {CLOSE.get(kind, '')}" for t in
             ["three red cubes", "one blue ball and 2 cubes", "a chart", "3 + 1 = 4 so four", "no idea"]]
    try:
        res = []
        for core in (eff, naive):
            s = core.open(image, QUESTION)
            ko = Judge(core, mode="label").knockout(s, kind, [Candidate(t) for t in texts], random.Random(1))
            res.append((ko.winner, ko.comparisons, ko.flagged))
        assert res[0][:2] == res[1][:2] and len(res[0][1]) == 4
        assert set(res[1][2]) <= set(res[0][2])   # batched pre-checks every candidate, naive those that come up
        # 5 -> 3 -> 2 -> 1: three rounds (+ one pre-check of all five for reasoning)
        assert eff.stats.judge_calls <= 3 + (kind == "reasoning") and naive.stats.judge_calls >= 4
    finally:
        eff.close(), naive.close()


def test_each_row_stops_at_its_own_stop_string_same_token_as_naive(tiny, image):
    eff, naive = cores(tiny, greedy=True)
    try:
        free = eff.open(image, QUESTION).sample(1, [], 16)[0]
        ids = free.token_ids
        # a stop string spanning the 6th and 7th generated tokens
        stop = (eff.piece(ids[5]) + eff.piece(ids[6]))[-3:]
        assert len(stop) >= 2
        a = eff.open(image, QUESTION).sample(3, [stop], 16)
        b = naive.open(image, QUESTION).sample(3, [stop], 16)
        assert [(c.text, c.token_ids, c.stop) for c in a] == [(c.text, c.token_ids, c.stop) for c in b]
        first = free.text.find(stop) + len(stop)
        assert all(c.stop == stop and c.text == eff.decode(ids[:len(c.token_ids)]) for c in a)
        assert len(a[0].token_ids) <= 7 and len(eff.decode(a[0].token_ids)) >= first
    finally:
        eff.close(), naive.close()


def test_rows_leave_the_batch_independently(tiny, image):
    """Sampled rows that end early (their stop string) stop costing forward tokens."""
    model, processor = tiny
    eff = GenerationCore(model, processor, seed=3, temperature=1.5, top_p=1.0)
    try:
        s = eff.open(image, QUESTION)
        s.ensure_prefix()
        eff.stats.reset()
        cands = s.sample(6, [" "], 20)        # a space: rows stop at different tokens
        assert all(c.stop in (" ", "eos", "budget") for c in cands)
        # each row is computed only while it runs: steps taken = its tokens (+1 for an end of text);
        # it is fed after every step but its last
        steps = [len(c.token_ids) + (c.stop == "eos") for c in cands]
        assert len(set(steps)) > 1
        assert eff.stats.forward_tokens == sum(k - 1 for k in steps)
        assert eff.stats.forward_calls == max(steps) - 1
    finally:
        eff.close()


def test_n_candidates_are_one_batched_call_over_a_prefix_encoded_once(tiny, image):
    eff, naive = cores(tiny, suppress_eos=True)
    n = 4
    try:
        cfg = SearchConfig(beam=n, budgets=TINY, judge="label", give_up_without_tags=False)
        a = run("stage_beam", eff, image, QUESTION, cfg)
        b = run("stage_beam", naive, image, QUESTION, cfg)
    finally:
        eff.close(), naive.close()
    assert a.stats["generate_calls"] == 4                     # one per stage, whatever N
    assert a.stats["vision_calls"] == 1                       # the image, encoded once
    assert a.stats["judge_calls"] <= 4 * 2 + 1                # 2 rounds per stage + the reasoning pre-check
    assert b.stats["generate_calls"] == 4 * n                 # the public structure: one per candidate
    assert b.stats["judge_calls"] >= 4 * (n - 1)
    assert b.stats["vision_calls"] == b.stats["generate_calls"] + b.stats["judge_calls"]
    assert all(len(s.candidates) == n for s in a.steps)


def test_one_sample_call_costs_budget_steps_of_n_rows(tiny, image):
    model, processor = tiny
    eff = GenerationCore(model, processor, suppress_eos=True)
    try:
        s = eff.open(image, QUESTION)
        s.ensure_prefix()
        eff.stats.reset()
        s.sample(5, [CLOSE["summary"]], 9)
        assert eff.stats.as_dict() == {"forward_calls": 8, "forward_tokens": 5 * 8, "vision_calls": 0,
                                       "generate_calls": 1, "judge_calls": 0, "judge_prompts": 0}
    finally:
        eff.close()


def test_rollback_returns_to_the_mark(tiny, image):
    model, processor = tiny
    eff = GenerationCore(model, processor, greedy=True)
    try:
        s = eff.open(image, QUESTION)
        first = s.sample(1, [], 6)[0]
        s.commit(first)
        m = s.mark()
        before = s.sample(2, [], 8)
        s.commit(before[0])
        s.commit(s.sample(1, [], 5)[0])
        s.rollback(m)
        assert s.text == first.text
        again = s.sample(2, [], 8)
        assert [c.token_ids for c in again] == [c.token_ids for c in before]
    finally:
        eff.close()


def test_a_separate_judge_model(tiny, image):
    model, processor = tiny
    gen, judge = GenerationCore(model, processor), GenerationCore(model, processor)
    try:
        res = run("stage_beam", gen, image, QUESTION, SearchConfig(beam=2, budgets=TINY, give_up_without_tags=False),
                  judge=judge)
    finally:
        gen.close(), judge.close()
    assert res.stats["judge_calls"] == 0 and res.stats["judge_judge_calls"] >= 4
    assert res.stats["judge_vision_calls"] == 1


def test_command_prints_the_four_stages(tiny_model_dir, image, tmp_path, capsys):
    from pipeline.search.__main__ import main

    img = tmp_path / "img.png"
    image.save(img)
    args = ["--model", tiny_model_dir, "--image", str(img), "--question", QUESTION, "--strategy", "stage_beam",
            "--beam", "2"] + [x for s in STAGES for x in (f"--{s}-tokens", "4")]
    assert main(args) == 0
    out = capsys.readouterr()
    assert all(f"{s.upper()}:" in out.out for s in STAGES)
    assert "forward tokens" in out.err


@pytest.mark.parametrize("vocab", [50, 1000])
def test_nucleus_and_top_k_sampling_draw_only_from_the_allowed_set(vocab):
    from pipeline.search.sampling import Sampling, choose, exponential_noise

    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(2, vocab, generator=torch.Generator().manual_seed(vocab)) * 3
    for s in (Sampling(0.6, 0.9), Sampling(0.6, 1.0, top_k=5), Sampling(0.6, 0.9, top_k=3)):
        for row in range(2):
            scaled = logits[row] / 0.6
            if s.top_k:
                scaled = scaled.masked_fill(scaled < scaled.topk(s.top_k).values[-1], float("-inf"))
            sp, si = torch.softmax(scaled, -1).sort(descending=True)
            allowed = set(si[((sp.cumsum(0) - sp) < s.top_p) & (sp > 0)].tolist())
            draws = {int(choose(logits, s, exponential_noise(logits.shape, gen, "cpu"))[row]) for _ in range(400)}
            assert draws <= allowed and len(draws) > 1
    assert choose(logits, Sampling(greedy=True)).tolist() == logits.argmax(-1).tolist()


def test_sampling_follows_the_probabilities():
    """The exponential race draws index i with probability p_i."""
    from pipeline.search.sampling import Sampling, choose, exponential_noise

    probs = torch.tensor([[0.5, 0.3, 0.2]])
    gen = torch.Generator().manual_seed(1)
    s = Sampling(temperature=1.0, top_p=1.0)
    draws = torch.stack([choose(probs.log(), s, exponential_noise((1, 3), gen, "cpu")) for _ in range(6000)])
    freq = torch.bincount(draws[:, 0], minlength=3).float() / 6000
    assert torch.allclose(freq, probs[0], atol=0.03)


def test_text_only_and_several_images(tiny, image):
    model, processor = tiny
    eff = GenerationCore(model, processor, greedy=True)
    cfg = SearchConfig(beam=2, budgets=TINY, greedy=True, give_up_without_tags=False)
    text_only = run("stage_beam", eff, None, QUESTION, cfg)
    assert text_only.stats["vision_calls"] == 0 and text_only.text
    two = run("stage_beam", eff, [image, image.rotate(90, expand=True)], QUESTION, cfg)
    assert two.stats["vision_calls"] == 1 and two.text           # joined into one image


def test_reading_tokens_a_step_late_gives_the_same_candidates(tiny, image):
    """The CUDA decode loop queues step t+1 before reading step t's ids; on the CPU the same loop
    (forced) must give the same candidates and stops as the step-by-step one."""
    model, processor = tiny
    plain = GenerationCore(model, processor, seed=3, temperature=1.5, top_p=1.0, overlap=False)
    late = GenerationCore(model, processor, seed=3, temperature=1.5, top_p=1.0, overlap=True)
    a = plain.open(image, QUESTION, seed=5).sample(4, [" "], 12)
    b = late.open(image, QUESTION, seed=5).sample(4, [" "], 12)
    assert [(c.token_ids, c.stop) for c in a] == [(c.token_ids, c.stop) for c in b]
    assert len({len(c.token_ids) for c in a}) > 1


def test_decoding_keeps_each_candidates_log_probability_and_the_judge_reads_it_for_free(tiny, image):
    from pipeline.search.base import ScoreItem

    model, processor = tiny
    eff = GenerationCore(model, processor, seed=1)
    s = eff.open(image, QUESTION)
    cands = s.sample(3, [], 6)
    scored = eff.score(s, [ScoreItem(QUESTION, "", tuple(c.token_ids)) for c in cands])
    assert [round(c.logprob, 3) for c in cands] == [round(x, 3) for x in scored]
    eff.stats.reset()
    ko = Judge(eff, mode="likelihood").knockout(s, "answer", cands, random.Random(0))
    assert eff.stats.judge_calls == 0 and eff.stats.forward_calls == 0       # no forward for the verdicts
    best = max(range(3), key=lambda i: cands[i].logprob / len(cands[i].token_ids))
    assert ko.winner == best or cands[ko.winner].text == cands[best].text


def test_one_loop_over_questions_of_different_lengths_and_budgets_stays_inside_the_cache(tiny, image):
    """Rows that finished ride along in the fixed-shape loop (CUDA, here forced) until the longest
    budget is spent: a long prompt with a short budget next to a short prompt with a long budget
    must still fit in the cache (on a GPU a position past its end is a device-side assert)."""
    model, processor = tiny
    core = GenerationCore(model, processor, seed=0, overlap=True, suppress_eos=True, ignore_stops=True)
    long_q = core.open(image, " ".join(["how many red cubes are there"] * 90))
    short = core.open(image, QUESTION)
    core.sync_many([long_q, short])
    assert long_q.length + 48 > core.runner.L > max(long_q.length + 2, short.length + 48)  # the premise
    a, b = core.sample_many([(long_q, 2, [], 2, None), (short, 2, [], 48, None)])
    assert [len(c.token_ids) for c in a] == [2, 2] and [len(c.token_ids) for c in b] == [48, 48]
