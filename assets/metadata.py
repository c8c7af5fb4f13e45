"""Turning pipeline summaries into metadata a data engineer wants to read in the UI."""
from __future__ import annotations

import json

import dagster as dg

from pipeline import schema

CELL_CHARS = 120


def _cell(value) -> str:
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
