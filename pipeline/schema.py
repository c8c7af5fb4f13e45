"""The Arrow schemas of the data model, defined once. Everything that writes a table uses these."""
from __future__ import annotations

import pyarrow as pa

TURN = pa.struct([("from", pa.string()), ("value", pa.string())])

# One image with its conversation. `image_path` is relative to the source root; image bytes are
# embedded only when the dataset is sharded. `question`/`answer` are the first turn's.
SAMPLE = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),
        pa.field("image_path", pa.string()),
        pa.field("question", pa.string(), nullable=False),
        pa.field("answer", pa.string(), nullable=False),
        pa.field("options", pa.list_(pa.string()), nullable=False),
        pa.field("hints", pa.list_(pa.string()), nullable=False),
        pa.field("conversations", pa.list_(TURN), nullable=False),
        pa.field("meta", pa.string(), nullable=False),  # JSON object as text
    ]
)

# A row that cannot be used, kept aside with a machine-readable reason (never silently dropped).
QUARANTINE = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("native_id", pa.string()),
        pa.field("reason", pa.string(), nullable=False),  # one of quarantine.REASONS
        pa.field("detail", pa.string(), nullable=False),  # human-readable explanation
        pa.field("location", pa.string(), nullable=False),  # file (and index) the row came from
        pa.field("record", pa.string()),  # the offending record as JSON, truncated
    ]
)
