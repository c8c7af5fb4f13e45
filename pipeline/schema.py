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
        # From the full decode of the image at ingest (null when the sample has no image): its
        # size in pixels and the SHA-256 (hex) of the file's bytes, the key of duplicate removal.
        pa.field("image_width", pa.int32()),
        pa.field("image_height", pa.int32()),
        pa.field("image_sha256", pa.string()),
    ]
)

# One row of the released dataset's Parquet shards. `image` has the layout of the Hugging Face
# `Image` feature ({bytes, path}: the encoded file as it was, never re-encoded), so
# `datasets.load_dataset("parquet", ...)` decodes it; null for a record without an image.
# pipeline/shards.py attaches the Hugging Face features as schema metadata.
SHARD = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("split", pa.string(), nullable=False),  # train | validation
        pa.field("image", pa.struct([("bytes", pa.binary()), ("path", pa.string())])),
        pa.field("conversations", pa.list_(TURN), nullable=False),
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
        pa.field("rows", pa.int64()),  # native records this entry stands for (a whole file: many; null: unknown)
    ]
)

# One row per assistant turn of a subsampled sample: the teacher's four-stage answer and its fate.
ANNOTATION = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("turn_index", pa.int32(), nullable=False),  # index among the sample's gpt turns
        pa.field("status", pa.string(), nullable=False),  # ok | refused | invalid | error | pending
        pa.field("reason", pa.string(), nullable=False),  # why, when status is not ok
        pa.field("response", pa.string()),  # the accepted (or last) four-stage text
        pa.field("summary", pa.string()),
        pa.field("caption", pa.string()),
        pa.field("reasoning", pa.string()),
        pa.field("conclusion", pa.string()),
        pa.field("teacher_model", pa.string(), nullable=False),
        pa.field("prompt_version", pa.string(), nullable=False),
        pa.field("judge_verdict", pa.string(), nullable=False),  # rule:<name> | valid | invalid | none
        pa.field("attempts", pa.int32(), nullable=False),
        pa.field("input_tokens", pa.int64(), nullable=False),
        pa.field("output_tokens", pa.int64(), nullable=False),
        pa.field("cost_usd", pa.float64(), nullable=False),
        pa.field("round", pa.int32(), nullable=False),  # re-annotation round that produced this row
        pa.field("input_hash", pa.string(), nullable=False),  # hash of the turn's inputs
    ]
)

# A turn (or a whole sample) rejected by validation or dataset assembly, with its reason.
REJECT = pa.schema(
    [
        pa.field("sample_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("turn_index", pa.int32()),  # None: the whole sample
        pa.field("reason", pa.string(), nullable=False),
        pa.field("detail", pa.string(), nullable=False),
    ]
)
