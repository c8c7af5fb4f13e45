"""The GPU-busy fraction of profiled steps: the union of device intervals inside the profiled host
range, over that range's wall time, read from a Chrome trace in Kineto's layout."""
from __future__ import annotations

import json

import pytest

from pipeline.train.profiling import WINDOW, device_busy, union_length


def event(cat: str, name: str, ts: float, dur: float, **extra) -> dict:
    return {"ph": "X", "cat": cat, "name": name, "ts": ts, "dur": dur, "pid": 0, "tid": 7, **extra}


def trace(events: list[dict]) -> dict:
    return {"schemaVersion": 1, "traceEvents": events}


def test_union_counts_overlaps_once():
    assert union_length([(0, 4), (2, 6), (10, 11), (10.5, 10.7)]) == pytest.approx(7.0)
    assert union_length([]) == 0.0


def test_busy_is_the_union_of_device_work_inside_the_window():
    events = [
        event("user_annotation", WINDOW, 1000, 1000),                   # the profiled steps: 1 ms
        event("gpu_user_annotation", WINDOW, 1000, 1000),               # its GPU-side mirror: not work
        event("kernel", "sm90_xmma_gemm_bf16", 1100, 300, args={"stream": 7}),
        event("kernel", "fmha_cutlassF_bf16", 1300, 200, args={"stream": 13}),   # overlaps the gemm
        event("gpu_memcpy", "Memcpy HtoD (Pinned -> Device)", 1600, 50),
        event("gpu_memset", "Memset (Device)", 1700, 10),
        event("kernel", "multi_tensor_apply_kernel", 1950, 100),        # half of it after the window
        event("kernel", "before_the_window", 800, 100),
        event("cuda_runtime", "cudaLaunchKernel", 1100, 5),             # host side of a launch
        event("cuda_sync", "Stream Sync", 1700, 250),                   # the host waiting: not work
        event("cpu_op", "aten::mm", 1100, 20),
    ]
    got = device_busy(trace(events))
    # gemm + attention: 1100-1500 (400 us), copy 50, memset 10, optimizer 50 of its 100
    assert got["busy_s"] == pytest.approx(510e-6)
    assert got["wall_s"] == pytest.approx(1e-3)
    assert got["busy_fraction"] == pytest.approx(0.51)
    assert got["events"] == 5
    assert got["by_kind_s"] == pytest.approx({"matmul": 300e-6, "attention": 200e-6, "copy": 60e-6,
                                              "optimizer": 50e-6})


def test_the_last_window_counts_and_a_trace_without_device_work_gives_none(tmp_path):
    events = [event("user_annotation", WINDOW, 0, 100), event("kernel", "gemm", 10, 50),
              event("user_annotation", WINDOW, 1000, 100), event("kernel", "gemm", 1010, 20)]
    path = tmp_path / "trace.json"
    path.write_text(json.dumps(trace(events)))
    assert device_busy(path)["busy_fraction"] == pytest.approx(0.2)
    assert device_busy(trace(events[:1] + [event("cpu_op", "aten::mm", 10, 50)])) is None
    assert device_busy(trace(events[1:2])) is None      # no profiled range at all


def test_torch_profiler_trace_has_the_range_this_reads(tmp_path):
    """The range is found in a trace torch.profiler really writes (on the CPU: no device events)."""
    torch = pytest.importorskip("torch")
    from torch.profiler import ProfilerActivity, profile, record_function

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        with record_function(WINDOW):
            torch.ones(64, 64).matmul(torch.ones(64, 64))
    path = tmp_path / "trace.json"
    prof.export_chrome_trace(str(path))
    events = json.loads(path.read_text())["traceEvents"]
    assert any(e.get("name") == WINDOW and e.get("cat") == "user_annotation" for e in events)
    assert device_busy(path) is None
