"""Blocking checks that gate publication: the step's output is published (and materialised) only
when every one of its blocking checks passes (pipeline/publish.py does the file moves).

When a check fails, the step yields only its check results: Dagster records the failed checks for
the partition, records no materialisation (so the partition's latest materialisation, its data
version and the published files all stay the previous good ones) and fails the step, so nothing
downstream runs. The metadata the materialisation would have had goes with the failed checks, so
the UI shows why. The asset must be declared with `output_required=False`.
"""
from __future__ import annotations

from collections.abc import Iterator, Sequence

import dagster as dg

from pipeline.publish import Staged


def gate(staging: Staged, checks: Sequence[dg.AssetCheckResult], result: dg.MaterializeResult) -> Iterator:
    """Every check in `checks` is blocking: publish and yield `result` when all pass."""
    if all(c.passed for c in checks):
        staging.publish()
        yield result
        return
    kept = staging.reject()
    note = (f" -- not published: the previous output of this partition stays in place; "
            f"the rejected output is in {kept.uri}")
    for c in checks:
        yield c if c.passed else dg.AssetCheckResult(
            check_name=c.check_name, passed=False, severity=c.severity,
            metadata={**(result.metadata or {}), **c.metadata, "rejected_output": dg.MetadataValue.path(kept.uri)},
            description=(c.description or f"{c.check_name} failed") + note,
        )
