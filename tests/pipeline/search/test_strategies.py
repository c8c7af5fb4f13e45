"""Strategies on a scripted core (no model, no torch): knockout, stop tags, best-of-N, sentence
level, stage level, retracing, and the registry."""
from __future__ import annotations

import random
import re

import pytest

from pipeline.search import SearchConfig, run, strategies
from pipeline.search.base import Candidate, StopScanner
from pipeline.search.judge import Judge
from pipeline.stages import CLOSE, OPEN, STAGES, parse

from .scripted import ScriptedCore, checked, compared


def quality(body: str) -> int:
    m = re.search(r"q=(\d+)", body)
    return int(m.group(1)) if m else -1


def prefer_quality(a: str, b: str) -> int:
    return 0 if quality(a) >= quality(b) else 1


def staged(qualities: dict[str, list[int]], spill: bool = True):
    """Continuations for the stage named by the stop string; each runs past its closing tag."""
    def continuations(text, stop, n):
        stage = next(s for s in STAGES if CLOSE[s] in stop)
        qs = qualities.get(stage, list(range(n)))
        tail = " and then <NEXT> more text" if spill else ""
        return [f"{OPEN[stage]} {stage} q={q} {'x ' * i}{CLOSE[stage]}{tail}\n\n" for i, q in enumerate(qs[:n])]
    return continuations


# --- knockout ----------------------------------------------------------------------------------
@pytest.mark.parametrize("batched", [True, False])
@pytest.mark.parametrize("n", [2, 3, 4, 5, 8])
def test_knockout_keeps_the_judged_winner_with_n_minus_1_comparisons(n, batched):
    qs = random.Random(n).sample(range(100), n)
    core = ScriptedCore(lambda *a: [], prefer=prefer_quality, batched=batched)
    session = core.open(None, "q?")
    cands = [Candidate(f"answer q={q}") for q in qs]
    ko = Judge(core).knockout(session, "answer", cands, random.Random(0))
    assert ko.winner == qs.index(max(qs))
    assert len(ko.comparisons) == n - 1
    calls = [e for e in core.log if e[0] == "verdicts"]
    if batched:     # one call per round, all of the round's comparisons in it
        assert len(calls) == (n - 1).bit_length()
        assert sum(c[1] for c in calls) == n - 1
    else:           # one call per comparison
        assert [c[1] for c in calls] == [1] * (n - 1)
    # every comparison's recorded winner is what the judge said
    for a, b, w in ko.comparisons:
        assert w == (a if quality(cands[a].text) >= quality(cands[b].text) else b)


def test_knockout_follows_the_judge_not_a_fixed_order():
    # the judge always answers "2": the winner is whoever sat second in the last comparison
    core = ScriptedCore(lambda *a: [], prefer=lambda a, b: 1)
    session = core.open(None, "q?")
    ko = Judge(core).knockout(session, "answer", [Candidate(f"c{i}") for i in range(4)], random.Random(3))
    assert ko.winner == ko.comparisons[-1][1]


def test_batched_and_one_by_one_knockouts_decide_the_same():
    for seed in range(5):
        qs = random.Random(seed).sample(range(50), 7)
        res = []
        for batched in (True, False):
            core = ScriptedCore(lambda *a: [], prefer=prefer_quality, batched=batched)
            ko = Judge(core).knockout(core.open(None, "q"), "caption", [Candidate(f"q={q}") for q in qs],
                                      random.Random(seed))
            res.append((ko.winner, ko.comparisons))
        assert res[0] == res[1]


def test_identical_candidates_are_judged_once():
    core = ScriptedCore(lambda *a: [], prefer=prefer_quality)
    ko = Judge(core).knockout(core.open(None, "q"), "answer",
                              [Candidate("q=1"), Candidate("q=5"), Candidate("q=1"), Candidate("q=5")],
                              random.Random(0))
    assert ko.winner == 1 and len(ko.comparisons) == 1


def test_reasoning_precheck_runs_first_and_a_wrong_candidate_loses_unjudged():
    # the judge prefers q=9, but the pre-check finds its reasoning wrong
    core = ScriptedCore(lambda *a: [], prefer=prefer_quality, wrong=lambda body: "q=9" in body)
    session = core.open(None, "q")
    cands = [Candidate(f"{OPEN['reasoning']} q={q} {CLOSE['reasoning']}") for q in (9, 3, 5, 1)]
    ko = Judge(core).knockout(session, "reasoning", cands, random.Random(0))
    assert ko.winner == 2 and ko.flagged == [0]
    # one call pre-checks all four; then one per round, without the comparison the pre-check decided
    assert [e for e in core.log if e[0] == "verdicts"] == [("verdicts", 4), ("verdicts", 1), ("verdicts", 1)]
    assert sum(1 for p in core.prompts if checked(p)) == 4
    judged = [compared(p) for p in core.prompts if compared(p)]
    assert all("q=9" not in a + b for a, b in judged)       # the wrong one never reached the judge
    assert len(ko.comparisons) == 3


def test_naive_precheck_runs_per_comparison_like_the_public_code():
    core = ScriptedCore(lambda *a: [], prefer=prefer_quality, wrong=lambda body: False, batched=False)
    cands = [Candidate(f"{OPEN['reasoning']} q={q} {CLOSE['reasoning']}") for q in (1, 2, 3, 4)]
    ko = Judge(core).knockout(core.open(None, "q"), "reasoning", cands, random.Random(0))
    checks = [p for p in core.prompts if checked(p)]
    assert ko.winner == 3 and len(checks) == 2 * 3   # both sides, each of the 3 comparisons


def test_judge_prompts_carry_the_stage_criteria():
    core = ScriptedCore(lambda *a: [], prefer=prefer_quality)
    session = core.open(None, "How many cubes?")
    for kind, words in [("summary", "plan"), ("caption", "details"), ("reasoning", "steps"),
                        ("conclusion", "refuses")]:
        core.prompts.clear()
        cands = [Candidate(f"{OPEN[kind]} q={q} {CLOSE[kind]}") for q in (1, 2)]
        Judge(core).knockout(session, kind, cands, random.Random(0))
        comp = [p for p in core.prompts if compared(p)][0]
        assert words in comp and "How many cubes?" in comp
        assert compared(comp) in [("q=1", "q=2"), ("q=2", "q=1")]   # bodies without tags


# --- stop scanning (the per-token detection the real core uses) --------------------------------
def test_stop_scanner_finds_tags_split_over_tokens_and_stops_rows_independently():
    vocab = {1: "hello", 2: " </SUM", 3: "MARY", 4: ">\n\n", 5: "</SUMMARY>", 6: " x", 7: "", 9: "END"}
    sc = StopScanner(["</SUMMARY>"], vocab.__getitem__, eos=[9])
    row0 = [1, 2, 3, 4]          # tag over three tokens
    row1 = [1, 6, 5]             # tag in one token
    row2 = [6, 6, 7, 6, 9]       # no tag, then end of text
    ends = {}
    for r, seq in enumerate([row0, row1, row2]):
        for i, t in enumerate(seq):
            hit = sc.feed(r, t)
            if hit:
                ends[r] = (i, hit)
                break
    assert ends == {0: (3, "</SUMMARY>"), 1: (2, "</SUMMARY>"), 2: (4, "eos")}


def test_stop_scanner_keeps_only_a_short_tail():
    sc = StopScanner(["</CONCLUSION>", "."], {1: "word "}.__getitem__)
    for _ in range(1000):
        assert sc.feed(0, 1) is None
    assert len(sc.tails[0]) == len("</CONCLUSION>") - 1


# --- strategies ----------------------------------------------------------------------------------
def test_stage_beam_each_candidate_stops_at_its_own_tag_and_winners_are_appended():
    qs = {"summary": [1, 7, 3, 2], "caption": [5, 1, 9, 0], "reasoning": [2, 8, 4, 6], "conclusion": [3, 3, 1, 9]}
    core = ScriptedCore(staged(qs), prefer=prefer_quality)
    res = run("stage_beam", core, None, "How many?", SearchConfig(beam=4))
    samples = [e for e in core.log if e[0] == "sample"]
    assert [e[1] for e in samples] == [(CLOSE[s],) for s in STAGES]     # one call per stage, its own tag
    assert all(e[2] == 4 for e in samples)
    for step, stage in zip(res.steps, STAGES):
        assert all(c.endswith(CLOSE[stage]) and "<NEXT>" not in c for c in step.candidates)
        assert len({len(c) for c in step.candidates}) == 4                # different lengths, own stops
        assert len(step.comparisons) == 3
    assert res.problem is None and parse(res.text).ok
    assert {s: quality(res.stages[s]) for s in STAGES} == {s: max(v) for s, v in qs.items()}
    assert res.stats["generate_calls"] == 4


def test_stage_beam_budget_and_the_next_stage_starts_after_the_winner():
    seen = []

    def cont(text, stop, n):
        seen.append(text)
        return staged({})(text, stop, n)

    core = ScriptedCore(cont, prefer=prefer_quality)
    res = run("stage_beam", core, None, "q", SearchConfig(beam=2, budgets={"summary": 3, "caption": 50,
                                                                            "reasoning": 50, "conclusion": 50}))
    assert [e[3] for e in core.log if e[0] == "sample"] == [3, 50, 50, 50]
    assert res.steps[0].note.startswith("stop=budget")
    assert seen[1] == res.steps[0].candidates[res.steps[0].winner]    # caption sampled after the summary winner


def test_best_of_n_samples_whole_answers_once_and_judges_them_whole():
    def cont(text, stop, n):
        assert stop == [CLOSE["conclusion"]]
        return ["".join(f"{OPEN[s]} q={q} {CLOSE[s]}" for s in STAGES) + " trailing" for q in (4, 8, 1)][:n]

    core = ScriptedCore(cont, prefer=prefer_quality)
    res = run("best_of_n", core, None, "q", SearchConfig(beam=3))
    assert res.stats["generate_calls"] == 1
    assert [e[2] for e in core.log if e[0] == "sample"] == [3]
    assert res.steps[0].winner == 1 and len(res.steps[0].comparisons) == 2
    assert all("complete answer" in p for p in core.prompts)
    assert res.text.endswith(CLOSE["conclusion"]) and res.problem is None


def test_sentence_beam_one_sentence_at_a_time_until_the_conclusion_closes():
    # what the k-th sentence looks like; candidate i writes q=i into it; each runs past its end
    sentences = [f"{OPEN['summary']} Plan Q.", f" Two {CLOSE['summary']} {OPEN['caption']} Cap Q.",
                 f" {CLOSE['caption']} {OPEN['reasoning']} R Q.", f" {CLOSE['reasoning']} {OPEN['conclusion']} 4 Q "
                 f"{CLOSE['conclusion']}"]

    def cont(text, stop, n):
        assert stop == [".", CLOSE["conclusion"]]
        k = text.count("Q")
        return [sentences[k].replace("Q", f"Q q={i}") + " and more. words" for i in range(n)]

    core = ScriptedCore(cont, prefer=prefer_quality)
    res = run("sentence_beam", core, None, "q", SearchConfig(beam=3))
    assert len(res.steps) == 4 and all(len(s.comparisons) == 2 for s in res.steps)
    assert res.stats["generate_calls"] == 4
    assert [s.note for s in res.steps] == [".", ".", ".", CLOSE["conclusion"]]
    assert all(s.candidates[s.winner].endswith((".", CLOSE["conclusion"])) for s in res.steps)
    assert res.text.endswith(CLOSE["conclusion"]) and res.text.count("q=2") == 4 and "more" not in res.text
    assert res.problem is None
    assert all("next sentence" in p for p in core.prompts)


def test_sentence_beam_stops_at_its_step_limit():
    core = ScriptedCore(lambda text, stop, n: ["Forever on. and on"] * n)
    res = run("sentence_beam", core, None, "q", SearchConfig(beam=2, max_sentences=5))
    assert len(res.steps) == 5 and res.text == "Forever on." * 5


def test_direct_is_one_pass():
    core = ScriptedCore(staged({}))
    res = run("direct", core, None, "q", SearchConfig(beam=8))
    assert core.log[0] == ("sample", (CLOSE["conclusion"],), 1, SearchConfig().total_budget)
    assert core.stats.judge_calls == 0 and len(res.steps) == 1


# --- retracing -------------------------------------------------------------------------------------
def retrace_core(attempt_scores: list[float]):
    """Reasoning candidates whose best score per attempt is given; captions numbered by attempt."""
    state = {"cap": 0}

    def cont(text, stop, n):
        stage = next(s for s in STAGES if CLOSE[s] in stop)
        if stage == "caption":
            state["cap"] += 1
        return [f"{OPEN[stage]} {stage} a={state['cap']} i={i} {CLOSE[stage]}" for i in range(n)]

    def scorer(image, question, text):
        last = text.rsplit(OPEN["summary"], 1)[-1]
        if last.rstrip().endswith(CLOSE["reasoning"]):
            a = int(re.findall(r"a=(\d+)", text)[-1])
            i = int(re.findall(r"i=(\d+)", text)[-1])
            return attempt_scores[min(a, len(attempt_scores)) - 1] - 0.01 * i
        return 1.0

    return ScriptedCore(cont), scorer


def test_retrace_goes_back_to_the_caption_when_the_best_reasoning_scores_low():
    core, scorer = retrace_core([0.1, 0.2, 0.9])
    res = run("retrace", core, None, "q", SearchConfig(beam=2, scorer=scorer, cutoff=0.5, max_retraces=3))
    kinds = [s.kind for s in res.steps]
    assert kinds == ["summary", "caption", "reasoning", "retrace", "caption", "reasoning", "retrace",
                     "caption", "reasoning", "conclusion"]
    assert sum(1 for e in core.log if e[0] == "rollback") == 2
    assert "a=3" in res.stages["caption"] and "a=3" in res.stages["reasoning"]
    assert res.text.count(OPEN["caption"]) == 1 and res.problem is None


def test_retrace_stops_at_the_limit_and_keeps_the_best_attempt():
    core, scorer = retrace_core([0.3, 0.1, 0.2, 0.05])
    res = run("retrace", core, None, "q", SearchConfig(beam=2, scorer=scorer, cutoff=0.5, max_retraces=2))
    assert sum(1 for s in res.steps if s.kind == "caption") == 3          # first try + 2 retraces
    assert "limit" in res.steps[-2].note
    assert "a=1" in res.stages["caption"] and "a=1 i=0" in res.stages["reasoning"]
    assert res.problem is None and res.text.count(OPEN["reasoning"]) == 1


def test_retrace_no_retrace_when_scores_are_high_and_samples_the_configured_counts():
    core, scorer = retrace_core([0.9])
    res = run("retrace", core, None, "q", SearchConfig(beam=2, n_captions=3, n_reasonings=5, scorer=scorer))
    assert [e[2] for e in core.log if e[0] == "sample"] == [2, 3, 5, 2]
    assert not any(s.kind == "retrace" for s in res.steps)


def test_retrace_default_scorer_is_the_models_own_check():
    core, _ = retrace_core([0.0])
    core.wrong = lambda body: "i=0" in body      # the self-check rejects every first candidate
    res = run("retrace", core, None, "q", SearchConfig(beam=2, cutoff=0.5))
    assert all(s.scores[s.winner] > 0.99 for s in res.steps if s.scores and s.kind != "retrace")   # P(correct)
    assert "i=1" in res.stages["reasoning"]


def test_registry_knows_every_strategy():
    assert set(strategies()) >= {"direct", "best_of_n", "sentence_beam", "stage_beam", "retrace"}
    with pytest.raises(KeyError):
        run("nope", ScriptedCore(staged({})), None, "q")


def test_no_dagster_in_the_search_package():
    from pathlib import Path

    root = Path(__file__).resolve().parents[3] / "pipeline" / "search"
    assert not [p for p in root.rglob("*.py") if "dagster" in p.read_text().lower()]


# --- well-formed answers ----------------------------------------------------------------------------
def _bad_first(stage: str, i: int) -> str:
    """Candidate i of a stage: 0 breaks the format (in one of several ways), 1 is well-formed."""
    good = f"{OPEN[stage]} {stage} fine q=1 {CLOSE[stage]}\n\n"
    broken = [f"{stage} with no tags q=9 {CLOSE[stage]}",                        # text outside the tags
              f"{OPEN['conclusion']} jumped ahead q=9 {CLOSE[stage]}",            # wrong opening tag
              f"{OPEN[stage]} {CLOSE[stage]}"]                                    # empty body
    return good if i % 2 else broken[(i // 2) % len(broken)]


def _prefers_broken(a: str, b: str) -> int:
    return 0 if "q=9" in a or not a.strip() else 1


@pytest.mark.parametrize("mode", ["label", "likelihood"])
@pytest.mark.parametrize("strategy", ["stage_beam", "best_of_n", "sentence_beam", "retrace", "direct"])
def test_every_strategy_answers_well_formed_whenever_a_candidate_was(strategy, mode):
    answer_good = "".join(f"{OPEN[s]} {s} q=1 {CLOSE[s]}\n\n" for s in STAGES)
    answer_bad = answer_good.replace(CLOSE["caption"], "").replace("q=1", "q=9", 1)

    def cont(text, stop, n):
        if stop == [CLOSE["conclusion"]] and not text:                # a whole answer (direct, best_of_n)
            return [answer_good] if n == 1 else [answer_bad if i % 2 == 0 else answer_good for i in range(n)]
        if "." in stop:                                               # sentence_beam: a sentence each
            nxt = answer_good[len(text):]
            good = nxt[: nxt.find(CLOSE["conclusion"]) + len(CLOSE["conclusion"])] if "." not in nxt.split(
                CLOSE["conclusion"])[0] else nxt[: nxt.find(".") + 1]
            return [f"{CLOSE['reasoning']} q=9 stray text." if i % 2 == 0 else good for i in range(n)]
        stage = next(s for s in STAGES if CLOSE[s] in stop)
        return [_bad_first(stage, i) for i in range(n)]

    likes = lambda text: 5.0 if ("q=9" in text or not text.strip()) else -5.0    # noqa: E731 - adversarial
    core = ScriptedCore(cont, prefer=_prefers_broken, judge_mode=mode, likes=likes)
    scorer = lambda image, question, text: 1.0 if "q=9" in text else 0.9     # noqa: E731 - adversarial too
    res = run(strategy, core, None, "q?", SearchConfig(beam=4, scorer=scorer, cutoff=0.5, n_captions=4,
                                                         n_reasonings=4, max_sentences=12))
    assert res.problem is None, (res.text, res.steps)
    assert parse(res.text).ok


def test_beam_below_one_is_a_clear_error():
    with pytest.raises(ValueError, match="beam must be at least 1"):
        run("stage_beam", ScriptedCore(staged({})), None, "q", SearchConfig(beam=0))


def test_stage_beam_stops_when_the_winner_ended_the_text():
    def cont(text, stop, n):
        return [f"{OPEN['summary']} done {CLOSE['summary']}"] * n

    core = ScriptedCore(cont)
    core_sample = ScriptedSessionEnds.patch(core)
    res = run("stage_beam", core, None, "q", SearchConfig(beam=2))
    assert [s.kind for s in res.steps] == ["summary"] and "ended the text" in res.steps[0].note
    assert core_sample.calls == 1


def test_stage_beam_gives_up_the_stage_search_for_a_model_that_writes_no_tags():
    core = ScriptedCore(lambda text, stop, n: ["just words and more words"] * n)
    res = run("stage_beam", core, None, "q", SearchConfig(beam=4))
    assert [s.kind for s in res.steps] == ["summary", "answer"]
    assert [e[2] for e in core.log if e[0] == "sample"] == [4, 1]      # N candidates once, then one pass
    assert "writes no stage tags" in res.steps[-1].note


class ScriptedSessionEnds:
    """Make every candidate of a scripted core end with end of text."""

    def __init__(self):
        self.calls = 0

    @classmethod
    def patch(cls, core):
        spy = cls()
        real_open = core.open

        def open_(image, question):
            s = real_open(image, question)
            real_sample = s.sample

            def sample(*a, **k):
                spy.calls += 1
                out = real_sample(*a, **k)
                for c in out:
                    c.stop = "eos"
                return out
            s.sample = sample
            return s
        core.open = open_
        return spy


@pytest.mark.parametrize("four_stage, mode", [(True, "likelihood"), (False, "label")])
def test_auto_judge_mode_follows_whether_the_model_answers_in_four_stages(four_stage, mode):
    core = ScriptedCore(staged({}), judge_mode=None, four_stage=four_stage)
    session = core.open(None, "How many?")
    assert Judge(core).mode_for(session) == mode
    assert core.judge_mode == mode                       # decided once per core
    calls = core.stats.judge_calls
    Judge(core).mode_for(session)
    assert core.stats.judge_calls == calls
