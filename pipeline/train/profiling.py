"""How busy the GPU is during training steps, from a torch.profiler trace.

The trainer (`--profile-steps A:B`) profiles steps A to B inside one host range named
`WINDOW` (it synchronises the device before and after, so the range holds exactly those steps'
work) and exports a Chrome trace. `device_busy(trace)` then measures, inside that range:

  busy fraction   the time at least one kernel, copy or memset runs (the union of their
                  intervals: kernels on several streams that overlap are counted once), over the
                  range's wall time;
  by kind         summed kernel time per kind (matmul, attention, communication, optimizer,
                  copy, other), which says where the device time goes.

It reads the Chrome trace format (JSON `traceEvents`: `cat`, `name`, `ts`, `dur` in microseconds),
which is stable across torch versions, rather than profiler internals.
"""
from __future__ import annotations

import json
from pathlib import Path

WINDOW = "llavacot/profiled_steps"
DEVICE_CATEGORIES = ("kernel", "gpu_memcpy", "gpu_memset")
KINDS = (  # first match wins; kernel names are lower-cased
    ("communication", ("nccl", "allgather", "reduce_scatter", "all_reduce")),
    ("attention", ("flash", "fmha", "attention", "attn", "efficient")),
    ("matmul", ("gemm", "cutlass", "xmma", "matmul", "sm90", "sm100", "cublas", "splitk", "nvjet")),
    ("optimizer", ("adam", "multi_tensor", "foreach", "clip")),
    ("copy", ("memcpy", "memset", "copy", "cat")),
)


def union_length(intervals: list[tuple[float, float]]) -> float:
    """Total length covered by the intervals (overlaps counted once)."""
    total, end = 0.0, float("-inf")
    for a, b in sorted(intervals):
        if b <= end:
            continue
        total += b - max(a, end)
        end = b
    return total


def kind_of(name: str, category: str) -> str:
    if category != "kernel":
        return "copy"
    low = name.lower()
    for kind, needles in KINDS:
        if any(n in low for n in needles):
            return kind
    return "other"


def device_busy(trace: dict | str | Path, window: str = WINDOW,
                categories: tuple[str, ...] = DEVICE_CATEGORIES) -> dict | None:
    """{"wall_s", "busy_s", "busy_fraction", "by_kind_s", "events"} for the device events inside
    the (last) host range named `window`; None when the trace has no such range or no device
    event in it (a CPU-only run)."""
    if not isinstance(trace, dict):
        trace = json.loads(Path(trace).read_text())
    events = trace.get("traceEvents", trace) if isinstance(trace, dict) else trace
    ranges = [e for e in events if e.get("name") == window and e.get("ph") == "X"
              and e.get("cat") in ("user_annotation", "cpu_op", "python_function")]
    if not ranges:
        return None
    r = max(ranges, key=lambda e: float(e["ts"]))
    start, stop = float(r["ts"]), float(r["ts"]) + float(r["dur"])
    intervals, by_kind = [], {}
    for e in events:
        if e.get("cat") not in categories or e.get("ph") != "X":
            continue
        a, b = max(start, float(e["ts"])), min(stop, float(e["ts"]) + float(e.get("dur", 0)))
        if b <= a:
            continue
        intervals.append((a, b))
        kind = kind_of(str(e.get("name", "")), e["cat"])
        by_kind[kind] = by_kind.get(kind, 0.0) + (b - a) / 1e6
    if not intervals:
        return None
    wall = (stop - start) / 1e6
    busy = union_length(intervals) / 1e6
    return {"wall_s": wall, "busy_s": busy, "busy_fraction": busy / wall if wall > 0 else None,
            "by_kind_s": dict(sorted(by_kind.items(), key=lambda kv: -kv[1])), "events": len(intervals)}
