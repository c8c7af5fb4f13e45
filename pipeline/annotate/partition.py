"""Annotate one source partition: subsample rows in, annotation rows out.

Only the work that is missing is done: a turn already annotated `ok` under the same prompt
version, teacher model and inputs is kept as it is. `pending` turns (stopped by the spending cap)
and turns with no row are always (re)done. With policy `retry_failed` (the re-annotation
schedule), `error` turns are sent again and `refused`/`invalid` turns too, in a new round, so
their requests differ from the cached ones that failed.
"""
from __future__ import annotations

import asyncio
import json
from dataclasses import asdict, dataclass

import pyarrow.parquet as pq

from pipeline import schema
from pipeline.annotate import prompts
from pipeline.annotate.annotator import Annotator, RunStats, Turn, turns_of
from pipeline.storage import Root
from pipeline.tables import TableSink

ANNOTATE_VERSION = "1"
POLICIES = ("missing", "retry_failed")


@dataclass
class AnnotateSummary:
    source: str
    turns: int
    kept: int
    sent: int
    by_status: dict[str, int]
    stale: dict[str, int]
    estimate: dict
    stats: dict
    teacher_model: str
    prompt_version: str
    annotations_path: str
    content_hash: str
    batch: bool = False  # sent through the Batch API
    usd_per_accepted_turn: float | None = None  # this run: dollars spent / turns accepted in it
    partition_usd: float = 0.0  # what every row of the partition cost, this run and earlier ones
    partition_usd_per_accepted_turn: float | None = None


def estimate_line(source: str, e: dict) -> str:
    return (f"{source}: estimate before sending: {e['requests']} requests ({e['generation_requests']} generation, "
            f"{e['judge_requests']} judge; retries come on top), {e['input_tokens']:,} input and "
            f"{e['output_tokens']:,} output tokens, ${e['usd']:.2f} at {'Batch API' if e['batch'] else 'online'} "
            f"prices (worked out in {e['seconds']:.2f} s)")


def _previous(out: Root) -> dict[tuple[str, int], dict]:
    if not out.exists("annotations.parquet"):
        return {}
    with out.open("annotations.parquet", "rb") as f:
        rows = pq.read_table(f).to_pylist()
    return {(r["sample_id"], r["turn_index"]): r for r in rows}


def plan(turns: list[Turn], previous: dict, model: str, policy: str) -> tuple[dict, list[tuple[Turn, int]], dict]:
    """Split turns into kept rows and (turn, round) to send; count why each is sent."""
    if policy not in POLICIES:
        raise ValueError(f"policy must be one of {POLICIES}, not {policy!r}")
    kept: dict[tuple[str, int], dict] = {}
    todo: list[tuple[Turn, int]] = []
    why: dict[str, int] = {}
    for t in turns:
        old = previous.get((t.sample_id, t.turn_index))
        if old is None:
            reason, rnd = "new", 0
        elif old["input_hash"] != t.input_hash():
            reason, rnd = "input_changed", 0
        elif old["prompt_version"] != prompts.PROMPT_VERSION:
            reason, rnd = "stale_prompt", 0
        elif old["teacher_model"] != model:
            reason, rnd = "other_teacher", 0
        elif old["status"] == "ok":
            kept[(t.sample_id, t.turn_index)] = old
            continue
        elif old["status"] == "pending":
            reason, rnd = "pending", old["round"]
        elif policy == "retry_failed" and old["status"] == "error":
            reason, rnd = "retry_error", old["round"]
        elif policy == "retry_failed":  # refused / invalid: a new round, so new requests
            reason, rnd = f"retry_{old['status']}", old["round"] + 1
        else:
            kept[(t.sample_id, t.turn_index)] = old
            continue
        why[reason] = why.get(reason, 0) + 1
        todo.append((t, rnd))
    return kept, todo, why


def annotate_partition(
    source: str, subsample_path: str, source_root: Root, out: Root, annotator: Annotator,
    policy: str = "missing", log=print,
) -> AnnotateSummary:
    with out.fs.open(subsample_path, "rb") as f:
        rows = pq.read_table(f).to_pylist()
    turns = [t for r in rows for t in turns_of(r)]
    previous = _previous(out)
    kept, todo, why = plan(turns, previous, annotator.model_label, policy)
    annotator.choose_transport(len(todo))
    estimate = annotator.estimate([t for t, _ in todo])
    log(f"{source}: {len(turns)} turns; {len(kept)} kept, {len(todo)} to annotate {why}")
    if todo:
        log(estimate_line(source, estimate))

    new_rows: dict[tuple[str, int], dict] = {}
    by_round: dict[int, list[Turn]] = {}
    # the questions about one image one after another: they share the prompt prefix that the
    # provider's prompt cache bills at the cached-input price (it keeps prefixes for minutes)
    for t, rnd in sorted(todo, key=lambda tr: (tr[1], tr[0].image_path or "", tr[0].sample_id, tr[0].turn_index)):
        by_round.setdefault(rnd, []).append(t)

    async def run_rounds():
        base_round = annotator.s.round
        try:
            for rnd, group in sorted(by_round.items()):
                annotator.s.round = rnd
                for row in await annotator.run(group):
                    new_rows[(row["sample_id"], row["turn_index"])] = row
        finally:
            annotator.s.round = base_round
            await annotator.aclose()

    asyncio.run(run_rounds())

    sink = TableSink(out, "annotations.parquet", schema.ANNOTATION)
    by_status: dict[str, int] = {}
    partition_usd = 0.0
    try:
        for t in turns:
            key = (t.sample_id, t.turn_index)
            row = new_rows.get(key) or kept[key]
            sink.add(row)
            by_status[row["status"]] = by_status.get(row["status"], 0) + 1
            partition_usd += row["cost_usd"]
        sink.close()
    except BaseException:
        sink.abort()
        raise
    stats = annotator.stats.as_dict()
    accepted_now = sum(r["status"] == "ok" for r in new_rows.values())
    summary = AnnotateSummary(
        source=source, turns=len(turns), kept=len(kept), sent=len(todo), by_status=dict(sorted(by_status.items())),
        stale=why, estimate=estimate, stats=stats, teacher_model=annotator.model_label,
        prompt_version=prompts.PROMPT_VERSION, annotations_path=out.path("annotations.parquet"),
        content_hash=sink.hasher.hexdigest()[:32], batch=annotator.transport is not None,
        usd_per_accepted_turn=round(stats["spent_usd"] / accepted_now, 6) if accepted_now else None,
        partition_usd=round(partition_usd, 6),
        partition_usd_per_accepted_turn=(round(partition_usd / by_status["ok"], 6) if by_status.get("ok") else None),
    )
    with out.open("summary.json", "w") as f:
        f.write(json.dumps(asdict(summary), indent=2, sort_keys=True))
    return summary


def progress_line(stats: RunStats, total: int) -> str:
    s = stats
    return (f"{s.done}/{total} turns ({s.done / max(total, 1):.0%}); {dict(s.status)}; calls {s.calls}, "
            f"cache hits {s.cache_hits}, faults {dict(s.faults)}, ${s.spent_usd:.4f}")
