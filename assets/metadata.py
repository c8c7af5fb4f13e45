"""Turning pipeline summaries into metadata a data engineer wants to read in the UI."""
from __future__ import annotations

import json
import math

import dagster as dg

from pipeline import schema

CELL_CHARS = 120
DIGITS = 4  # significant digits of floats shown in the UI: enough to compare, short enough to read
FENCE = "`" * 3


def rounded(value):
    """`value` with every float in it cut to DIGITS significant digits, never rounding away digits
    before the point (lists and dicts too): 0.30000000000000004 -> 0.3, 0.0000312345 -> 3.123e-05."""
    if isinstance(value, float):
        if value == 0 or not math.isfinite(value):
            return value
        return round(value, max(0, DIGITS - 1 - math.floor(math.log10(abs(value)))))
    if isinstance(value, list):
        return [rounded(v) for v in value]
    if isinstance(value, dict):
        return {k: rounded(v) for k, v in value.items()}
    return value


def _cell(value) -> str:
    value = rounded(value)
    if isinstance(value, (list, dict)):
        value = json.dumps(value, ensure_ascii=False)
    text = "" if value is None else str(value)
    text = text.replace("\n", " ⏎ ")
    return text if len(text) <= CELL_CHARS else text[: CELL_CHARS - 1] + "…"


def preview_table(rows: list[dict], columns: list[str]) -> dg.MetadataValue:
    """A few rows as a Dagster table (long cells shortened)."""
    return dg.MetadataValue.table(
        records=[dg.TableRecord({c: _cell(r.get(c)) for c in columns}) for r in rows],
        schema=dg.TableSchema(columns=[dg.TableColumn(c, "string") for c in columns]),
    )


def _fenced(text: str) -> str:
    # a fenced block keeps the stage tags (<SUMMARY>...) visible: bare, markdown reads them as HTML
    return f"{FENCE}text\n" + (text or "").replace(FENCE, "` ` `") + f"\n{FENCE}"


def annotations_markdown(rows: list[dict], limit: int = 3) -> dg.MetadataValue:
    """A few whole annotations, readable in the UI: the teacher's four stages as written."""
    parts = []
    for r in rows[:limit]:
        why = f" ({r['reason']})" if r.get("reason") else ""
        parts.append(f"**{r['sample_id']}**, turn {r['turn_index']}: {r['status']}{why}, judge {r['judge_verdict']}\n\n"
                     + _fenced(r.get("response") or ""))
    return dg.MetadataValue.md("\n\n".join(parts) or "no annotations")


def conversations_markdown(rows: list[dict], limit: int = 3) -> dg.MetadataValue:
    """A few whole samples, readable in the UI: every turn of the conversation, not cut."""
    parts = []
    for r in rows[:limit]:
        turns = [f"*{t['from']}*\n\n" + _fenced(t["value"]) for t in r.get("conversations") or []]
        parts.append(f"**{r['id']}**\n\n" + "\n\n".join(turns))
    return dg.MetadataValue.md("\n\n---\n\n".join(parts) or "no samples")


def counts_table(counts: dict[str, int], key: str, value: str = "rows") -> dg.MetadataValue:
    return dg.MetadataValue.table(
        records=[dg.TableRecord({key: k, value: int(v)}) for k, v in counts.items()],
        schema=dg.TableSchema(columns=[dg.TableColumn(key, "string"), dg.TableColumn(value, "int")]),
    )


def sample_column_schema() -> dg.TableSchema:
    return dg.TableSchema(
        columns=[dg.TableColumn(f.name, str(f.type), description=None) for f in schema.SAMPLE]
    )


PREVIEW_COLUMNS = ["id", "split", "image_path", "question", "answer", "options", "hints"]
