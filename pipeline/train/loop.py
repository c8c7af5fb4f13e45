"""The training loop of `python -m pipeline.train`: micro-batches, optimizer steps, metrics,
checkpoints and the profiled window (pipeline/train/train.py sets everything up).

The host never waits for the device inside a step of its own making: the loss is summed on the
device; token, sample and FLOP counts come from the batch's shapes on the host; the step's time is
taken from CUDA events (device timestamps); a metrics line is assembled at the step where it is due
(its all-reduce queued there) and read back one step later, after the next step's work has been
queued, so the read does not leave the device idle. On the CPU the same code runs with host clocks.
"""
from __future__ import annotations

import resource
import sys
import time
from pathlib import Path

import torch
import torch.distributed as dist

from pipeline.train.flops import micro_batch_flops

GiB = 1024 ** 3


def to_device(batch: dict, device: torch.device, dtype: torch.dtype) -> dict:
    """The batch on the device: asynchronous copies from pinned memory; pixels in the model's dtype."""
    out = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
    if "pixel_values" in out:
        out["pixel_values"] = out["pixel_values"].to(dtype)
    return out


def peak_memory_gib(device: torch.device) -> float:
    """Peak memory of this process: allocated by torch on a GPU, resident set on the CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / GiB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GiB  # Linux: KiB


class _Clock:
    """Window timestamps: CUDA events on a GPU (no host sync to take one), host time elsewhere."""

    def __init__(self, device: torch.device) -> None:
        self.cuda = device.type == "cuda"

    def mark(self):
        if not self.cuda:
            return time.perf_counter()
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, start, end) -> float:
        if not self.cuda:
            return max(1e-9, end - start)
        end.synchronize()
        return max(1e-9, start.elapsed_time(end) / 1000.0)


class TrainLoop:
    def __init__(self, args, engine, lr_scheduler, reporter, sampler, model_config, dtype, device, peak_tflops,
                 world, rank, ckpt_dir: Path, step: int, micro: int, total_steps: int, stop_at: int,
                 resumed: bool, output_dir: Path) -> None:
        self.args, self.engine, self.lr_scheduler, self.reporter = args, engine, lr_scheduler, reporter
        self.sampler, self.model_config, self.dtype, self.device = sampler, model_config, dtype, device
        self.peak = peak_tflops * 1e12 if peak_tflops else None
        self.world, self.rank, self.ckpt_dir, self.output_dir = world, rank, ckpt_dir, output_dir
        self.step, self.micro, self.total_steps, self.stop_at = step, micro, total_steps, stop_at
        self.last_saved = step if resumed else None  # that checkpoint exists already
        self.frozen = tuple(n for n, on in (("vision", args.freeze_vision), ("projector", args.freeze_projector)) if on)
        self.clock = _Clock(device)
        self.loss_sum = torch.zeros(2, dtype=torch.float64, device=device)  # loss sum, micro-batches
        self.counts = [0.0, 0.0, 0.0, 0.0]  # tokens, samples, padded tokens, FLOPs of this rank
        self.totals = {"tokens": 0, "samples": 0, "padded": 0, "flops": 0.0, "seconds": 0.0}
        self.steady = {"flops": 0.0, "seconds": 0.0}  # every window after the first
        self.pending: dict | None = None
        self.last_loss = float("nan")
        self.profile: dict | None = None
        self._profiler = None
        self._window_range = None

    # -------------------------------------------------------------------------------------- steps

    def run(self, loader) -> dict:
        self.engine.train()
        lr = None
        window_start = self.clock.mark()
        window_steps = 0
        loop_start = time.time()
        for batch in ([] if self.step >= self.stop_at else loader):
            if self.micro % self.args.grad_accum == 0:
                lr = self.lr_scheduler.get_last_lr()[0] if self.lr_scheduler is not None else self.args.lr
                self._maybe_start_profile()
            self._count(batch)
            batch = to_device(batch, self.device, self.dtype)
            out = self.engine(**batch, use_cache=False)
            self.engine.backward(out.loss)
            self.engine.step()
            self.loss_sum += torch.stack([out.loss.detach().to(torch.float64), self.loss_sum.new_ones(())])
            self.micro += 1
            if self.pending is not None:  # the previous metrics line: its step is done by now
                self._emit()
            if self.micro % self.args.grad_accum:
                continue
            self.step += 1
            window_steps += 1
            self._maybe_stop_profile()
            if self.step % self.args.log_every == 0 or self.step == self.stop_at:
                window_start = self._assemble(lr, window_start, window_steps)
                window_steps = 0
            if self.step == self.stop_at or (self.args.save_every and self.step % self.args.save_every == 0):
                if self.step != self.stop_at or not self.args.no_final_checkpoint:
                    self.save(self.step)
            if self.step >= self.stop_at:
                break
        if self.pending is not None:
            self._emit()
        from pipeline.train.train import checkpoint_tag

        train_s = max(1e-9, time.time() - loop_start)
        t = self.totals
        final = {"step": self.step, "total_steps": self.total_steps, "loss": self.last_loss, "tokens": t["tokens"],
                 "samples": t["samples"], "train_s": train_s,
                 "mfu": self._mfu(self.steady["flops"], self.steady["seconds"]),
                 "useful_token_fraction": t["tokens"] / t["padded"] if t["padded"] else None,
                 "peak_memory_gib": peak_memory_gib(self.device),
                 "checkpoint": str(self.ckpt_dir / checkpoint_tag(self.last_saved)) if self.last_saved else None}
        if self.profile:
            final.update({f"profile_{k}": v for k, v in self.profile.items() if k != "reported" and not isinstance(v, dict)})
        return final

    def _count(self, batch: dict) -> None:
        """Tokens, rows, padded tokens and model FLOPs of a micro-batch, from its host tensors."""
        rows, seq = batch["input_ids"].shape
        images = batch["pixel_values"].shape[1] if "pixel_values" in batch else 0
        self.counts[0] += float(batch["attention_mask"].sum())
        self.counts[1] += rows
        self.counts[2] += rows * seq
        self.counts[3] += micro_batch_flops(self.model_config, rows, seq, images, self.frozen)

    # ------------------------------------------------------------------------------------ metrics

    def _assemble(self, lr, window_start, window_steps):
        """Queue the metrics of the window ending at this step (all-reduce on the device); they are
        read by `_emit` after the next step's work is queued. Returns the next window's start."""
        # the host counts go up from pinned memory, asynchronously: a copy from pageable memory
        # would wait for the device to finish the step (a synchronisation at every metrics line)
        cuda = self.device.type == "cuda"
        counts = torch.tensor(self.counts, dtype=torch.float64, pin_memory=cuda).to(self.device, non_blocking=cuda)
        values = torch.cat([self.loss_sum, counts])
        if self.world > 1:
            dist.all_reduce(values)
        end = self.clock.mark()
        grad_norm = self.engine.get_global_grad_norm()   # a float, or a tensor on the host or the device
        if torch.is_tensor(grad_norm) and grad_norm.device.type == self.device.type != "cpu":
            values = torch.cat([values, grad_norm.detach().reshape(1).to(values)])   # read back with the rest
            grad_norm = None
        elif torch.is_tensor(grad_norm):
            grad_norm = float(grad_norm)
        # back to the host asynchronously (into pinned memory), behind an event: `_emit` then waits
        # for this step's values only; a blocking copy (or float() of a device tensor) would wait for
        # everything queued since, the next step included, and leave the device idle after it
        host = values.to("cpu", non_blocking=cuda)
        ready = None
        if cuda:
            ready = torch.cuda.Event()
            ready.record()
        self.pending = {"step": self.step, "host": host, "ready": ready, "grad_norm": grad_norm, "lr": lr,
                        "start": window_start, "end": end, "steps": window_steps,
                        "epoch": self.micro / self.sampler.batches_per_epoch}
        self.loss_sum = torch.zeros_like(self.loss_sum)
        self.counts = [0.0, 0.0, 0.0, 0.0]
        return end

    def _emit(self) -> None:
        p, self.pending = self.pending, None
        if p["ready"] is not None:
            p["ready"].synchronize()
        loss_sum, micro, tokens, samples, padded, flops, *device_norm = p["host"].tolist()
        grad_norm = device_norm[0] if device_norm else p["grad_norm"]
        seconds = self.clock.seconds(p["start"], p["end"])
        first = self.totals["seconds"] == 0.0
        t = self.totals
        t["tokens"] += int(tokens)
        t["samples"] += int(samples)
        t["padded"] += int(padded)
        t["flops"] += flops
        t["seconds"] += seconds
        if not first:
            self.steady["flops"] += flops
            self.steady["seconds"] += seconds
        self.last_loss = loss_sum / max(1.0, micro)
        metrics = {
            "loss": self.last_loss, "lr": p["lr"], "tokens_per_s": tokens / seconds, "samples_per_s": samples / seconds,
            "step_time_s": seconds / max(1, p["steps"]), "mfu": self._mfu(flops, seconds),
            "tflops_per_device": flops / seconds / self.world / 1e12,
            "useful_token_fraction": tokens / padded if padded else None,
            "peak_memory_gib": peak_memory_gib(self.device), "epoch": p["epoch"],
            "grad_norm": float(grad_norm) if grad_norm is not None else None,
            "tokens": t["tokens"], "samples": t["samples"],
        }
        if self.profile and not self.profile.get("reported"):
            metrics.update({f"profile_{k}": v for k, v in self.profile.items() if k != "reported"})
            self.profile["reported"] = True
        self.reporter.log_metrics(p["step"], metrics)

    def _mfu(self, flops: float, seconds: float) -> float | None:
        if not self.peak or seconds <= 0:
            return None
        return flops / (seconds * self.peak * self.world)

    # -------------------------------------------------------------------------------- checkpoints

    def save(self, step_now: int) -> str:
        from pipeline.train.train import _data_signature, checkpoint_tag, prune_checkpoints, rng_file, rng_state

        if self.pending is not None:
            self._emit()  # the step's metrics before its checkpoint
        tag = checkpoint_tag(step_now)
        client = {"step": step_now, "micro_batches": self.micro, "total_steps": self.total_steps,
                  "data": _data_signature(self.args, self.world, self.sampler)}  # RNG states: a file per rank
        self.engine.save_checkpoint(str(self.ckpt_dir), tag=tag, client_state=client)
        torch.save(rng_state(), self.ckpt_dir / tag / rng_file(self.rank))
        dist.barrier()
        path = str(self.ckpt_dir / tag)
        if self.rank == 0:
            prune_checkpoints(self.ckpt_dir, self.args.keep_checkpoints)
            self.reporter.log_checkpoint(step_now, path)
        self.last_saved = step_now
        return path

    # ---------------------------------------------------------------------------------- profiling

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _maybe_start_profile(self) -> None:
        r = self.args.profile_range
        if not r or self.step + 1 != r[0] or self._profiler is not None or self.profile is not None:
            return
        from torch.profiler import ProfilerActivity, profile

        from pipeline.train.profiling import WINDOW

        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.device.type == "cuda" else [])
        self._sync()
        try:
            self._profiler = profile(activities=activities)
            self._profiler.__enter__()
            self._window_range = torch.autograd.profiler.record_function(WINDOW)
            self._window_range.__enter__()
        except Exception as exc:  # noqa: BLE001 - the profile is an extra: train on without it, say why
            self._profile_failed(r, "start", exc)

    def _maybe_stop_profile(self) -> None:
        r = self.args.profile_range
        if self._profiler is None or self.step != r[1]:
            return
        from pipeline.train.profiling import device_busy

        self._sync()
        folder = self.output_dir / "profile"
        trace = folder / f"trace-rank{self.rank}.json"
        try:
            self._window_range.__exit__(None, None, None)
            self._profiler.__exit__(None, None, None)
            folder.mkdir(parents=True, exist_ok=True)
            self._profiler.export_chrome_trace(str(trace))
            busy = device_busy(trace)
        except Exception as exc:  # noqa: BLE001 - as above: the steps' own figures are kept
            self._profile_failed(r, "trace", exc)
            return
        self.profile = {"steps": f"{r[0]}:{r[1]}", "trace": str(trace)}
        if busy is None:
            self.profile["device_busy_fraction"] = None  # no device events (a CPU run)
        else:
            self.profile.update({"device_busy_fraction": busy["busy_fraction"], "window_s": busy["wall_s"],
                                 "device_busy_s": busy["busy_s"], "by_kind_s": busy["by_kind_s"]})
        if self.rank == 0:
            print(f"profiled steps {r[0]}-{r[1]}: trace {trace}; device busy "
                  f"{busy['busy_fraction']:.1%} of {busy['wall_s']:.3f} s" if busy else
                  f"profiled steps {r[0]}-{r[1]}: trace {trace} (no device events)", file=sys.stderr, flush=True)
        self._profiler = None

    def _profile_failed(self, r, stage: str, exc: Exception) -> None:
        """The profile of steps r failed at `stage`: reported (metrics `profile_error`), profiler stopped."""
        profiler, self._profiler = self._profiler, None
        if profiler is not None:
            try:
                profiler.__exit__(None, None, None)
            except Exception:  # noqa: BLE001 - it failed already; the error below says so
                pass
        self.profile = {"steps": f"{r[0]}:{r[1]}", "error": f"{stage}: {type(exc).__name__}: {exc}"}
        if self.rank == 0:
            print(f"profiling steps {r[0]}-{r[1]} failed ({self.profile['error']}); training goes on",
                  file=sys.stderr, flush=True)
