"""Validation of annotated turns: small rules, each returning None (ok) or a (reason, detail).

A sample keeps the turns that pass every rule (a failing turn is dropped with its question, as the
public pipeline does); a sample with no passing turn is rejected. Every dropped turn is kept in
the rejects table with its reason.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field

from pipeline.agreement import agree
from pipeline.stages import STAGES, parse, render

VALIDATE_VERSION = "1"

# Character bounds per stage: generous, to catch runaway or truncated answers, not to judge style.
LENGTH_BOUNDS = {
    "summary": (10, 1500),
    "caption": (0, 6000),
    "reasoning": (10, 12000),
    "conclusion": (1, 6000),
}


@dataclass
class TurnContext:
    answer: str
    options: list[str]
    has_image: bool


Problem = tuple[str, str] | None


def rule_teacher_status(row: dict, ctx: TurnContext) -> Problem:
    if row["status"] != "ok":
        return f"teacher_{row['status']}", row["reason"] or row["status"]
    return None


def rule_four_stages(row: dict, ctx: TurnContext) -> Problem:
    parsed = parse(row["response"] or "", caption_may_be_empty=not ctx.has_image)
    if not parsed.ok:
        return f"format_{parsed.problem}", parsed.detail
    return None


def rule_no_refusal(row: dict, ctx: TurnContext) -> Problem:
    """The conclusion declines or gives no answer. Judged on the conclusion only (the format rule
    before this one has made sure nothing stands outside the four stages): a hedge in the
    reasoning followed by the answer is not a refusal."""
    conclusion = parse(row["response"] or "", caption_may_be_empty=not ctx.has_image).stages.get("conclusion", "")
    verdict = agree(conclusion, ctx.answer, ctx.options)
    if verdict.rule == "refusal":
        return "refusal", verdict.detail
    return None


def rule_answer_agrees(row: dict, ctx: TurnContext) -> Problem:
    stages = parse(row["response"] or "", caption_may_be_empty=not ctx.has_image).stages
    conclusion = stages.get("conclusion", "")
    verdict = agree(conclusion, ctx.answer, ctx.options)
    if verdict.decision == "agree":
        return None
    if verdict.decision == "disagree":
        return "answer_disagrees", f"{verdict.rule}: {verdict.detail}"
    if row["judge_verdict"] == "valid":  # rules cannot decide: the teacher's judge did
        return None
    return "answer_unverified", f"rules undecided ({verdict.rule}) and judge verdict {row['judge_verdict']!r}"


def rule_stage_lengths(row: dict, ctx: TurnContext) -> Problem:
    stages = parse(row["response"] or "", caption_may_be_empty=not ctx.has_image).stages
    for name in STAGES:
        n = len(stages.get(name, ""))
        lo, hi = LENGTH_BOUNDS[name]
        if name == "caption" and not ctx.has_image:
            lo = 0
        if n < lo:
            return f"too_short_{name}", f"{n} characters, at least {lo}"
        if n > hi:
            return f"too_long_{name}", f"{n} characters, at most {hi}"
    return None


RULES = [rule_teacher_status, rule_four_stages, rule_no_refusal, rule_answer_agrees, rule_stage_lengths]


def check_turn(row: dict, ctx: TurnContext) -> Problem:
    for rule in RULES:
        problem = rule(row, ctx)
        if problem:
            return problem
    return None


@dataclass
class SampleVerdict:
    sample: dict | None  # the sample with gpt turns replaced by four-stage answers, or None
    rejects: list[dict] = field(default_factory=list)
    turns_total: int = 0
    turns_valid: int = 0


def validate_sample(sample: dict, annotations: dict[int, dict]) -> SampleVerdict:
    """`annotations` maps the index of each gpt turn to its annotation row."""
    conv = sample["conversations"]
    kept: list[dict] = []
    rejects: list[dict] = []
    k = 0
    total = valid = 0
    pending_image = False
    for i, t in enumerate(conv):
        if t["from"] != "gpt":
            continue
        human = conv[i - 1] if i > 0 and conv[i - 1]["from"] == "human" else None
        total += 1
        ann = annotations.get(k)
        ctx = TurnContext(
            answer=sample["answer"] if k == 0 else t["value"],
            options=list(sample["options"] or []) if k == 0 else [],
            has_image=bool(sample["image_path"]),
        )
        problem = ("not_annotated", "no annotation row for this turn") if ann is None else check_turn(ann, ctx)
        if problem:
            rejects.append({"sample_id": sample["id"], "source": sample["source"], "turn_index": k,
                            "reason": problem[0], "detail": problem[1][:500]})
            if human is not None and "<image>" in human["value"]:
                pending_image = True  # the image token moves to the next kept question
        else:
            valid += 1
            stages = parse(ann["response"], caption_may_be_empty=not ctx.has_image).stages
            question = human["value"] if human is not None else ""
            if pending_image and "<image>" not in question:
                question = "<image>\n" + question
                pending_image = False
            kept += [{"from": "human", "value": question}, {"from": "gpt", "value": render(stages)}]
        k += 1
    if not kept:
        return SampleVerdict(None, rejects, total, valid)
    out = dict(sample)
    out["conversations"] = kept
    meta = json.loads(sample["meta"]) if sample.get("meta") else {}
    first = annotations.get(0) or next(iter(annotations.values()))
    meta.update({"teacher_model": first["teacher_model"], "prompt_version": first["prompt_version"]})
    out["meta"] = json.dumps(meta, ensure_ascii=False, sort_keys=True)
    return SampleVerdict(out, rejects, total, valid)


@dataclass
class ValidateSummary:
    source: str
    samples_in: int
    samples_out: int
    turns_total: int
    turns_valid: int
    rejects_by_reason: dict[str, int]
    stage_chars: dict[str, list[int]]  # per stage, the character count of each kept answer
    samples_path: str
    rejects_path: str
    content_hash: str

    @property
    def validity_rate(self) -> float:
        return self.turns_valid / self.turns_total if self.turns_total else 0.0


def validate_partition(source: str, subsample_path: str, annotations_path: str, out) -> ValidateSummary:
    import hashlib

    import pyarrow.parquet as pq

    from pipeline import schema
    from pipeline.tables import TableSink

    with out.fs.open(annotations_path, "rb") as f:
        ann_rows = pq.read_table(f).to_pylist()
    by_sample: dict[str, dict[int, dict]] = {}
    for r in ann_rows:
        by_sample.setdefault(r["sample_id"], {})[r["turn_index"]] = r
    samples = TableSink(out, "samples.parquet", schema.SAMPLE)
    rejects = TableSink(out, "rejects.parquet", schema.REJECT)
    reasons: dict[str, int] = {}
    chars: dict[str, list[int]] = {s: [] for s in STAGES}
    n_in = n_out = total = valid = 0
    try:
        with out.fs.open(subsample_path, "rb") as f:
            for batch in pq.ParquetFile(f).iter_batches(batch_size=5_000):
                for s in batch.to_pylist():
                    n_in += 1
                    v = validate_sample(s, by_sample.get(s["id"], {}))
                    total += v.turns_total
                    valid += v.turns_valid
                    for r in v.rejects:
                        rejects.add(r)
                        reasons[r["reason"]] = reasons.get(r["reason"], 0) + 1
                    if v.sample is not None:
                        samples.add(v.sample)
                        n_out += 1
                        for t in v.sample["conversations"]:
                            if t["from"] == "gpt":
                                for name, body in parse(t["value"], caption_may_be_empty=True).stages.items():
                                    chars[name].append(len(body))
        samples.close()
        rejects.close()
    except BaseException:
        samples.abort()
        rejects.abort()
        raise
    digest = hashlib.sha256((samples.hasher.hexdigest() + rejects.hasher.hexdigest()).encode()).hexdigest()[:32]
    return ValidateSummary(source, n_in, n_out, total, valid, dict(sorted(reasons.items())), chars,
                           out.path("samples.parquet"), out.path("rejects.parquet"), digest)
