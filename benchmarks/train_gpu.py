"""Training at GPU speed: the real entry point on a model of Llama-3.2-11B-Vision's widths (a script, not a test).

On a CUDA machine it builds an Mllama of the 11B widths with fewer layers (default: vision 8 + 2
global layers, text 10 layers with cross-attention at 3 and 8: 3.5 B parameters), random weights,
nothing downloaded; writes realistic shards with the project's shard writer (JPEG photos of
336-1,280 px in varied aspect ratios, four-stage answers of ~380 tokens with a realistic spread);
runs `torchrun --nproc_per_node 1 -m pipeline.train` (the project's defaults: ZeRO-3, length
grouping, fused AdamW, fused loss, 1 GPU) for warm-up + measured + profiled steps; then, in this
process, the same batches through plain PyTorch forward + backward (the stock model, no
DeepSpeed), and FlopCounterMode on one of them. It prints, from the trainer's own metrics:
  s/step, samples/s, MFU (model FLOPs over the bf16 peak: 989 TFLOP/s for H100/H200, see
  pipeline/train/flops.py, or --peak-tflops), peak memory, GPU-busy fraction of the profiled steps
  (union of kernel intervals over wall time), useful-token fraction, and the step's ratio to plain
  forward + backward of the same batches;
and the FLOPs per step by the trainer's formula next to FlopCounterMode's count. `--compare` also
runs ZeRO-2 and the configuration as shipped before issue 9 (no grouping, no fused loss or
kernels, multi-tensor AdamW, 2 loader workers), while the time budget allows. Full logs, the
trainer's metrics, the trace and summary.json go to --out; the last lines are a compact table.

Without CUDA the same code runs on the embedded tiny Mllama's widths (the CPU smoke test in
tests/benchmarks/test_train_gpu.py); it also measures, on CPU, the useful-token fraction a whole
epoch of the realistic rows gets with and without length grouping, tokenised by the run's
tokenizer.

    python benchmarks/train_gpu.py --out /tmp/train_gpu --compare          # on the GPU machine
    python benchmarks/train_gpu.py --out /tmp/train_gpu_cpu                # CPU: tiny widths
"""
from __future__ import annotations

import argparse
import io
import json
import math
import os
import platform
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

from readme import write_readme_section  # noqa: E402  benchmarks/readme.py

WORDS = ("the image shows a chart bar line value year total count object left right top bottom colour red blue "
         "green small large number question answer option first then therefore because so we see that each "
         "two three four more less than table title label axis person people car tree building sign text "
         "area angle triangle circle side length sum difference result step reasoning conclusion caption").split()


# ----------------------------------------------------------------------------------------- data


def photo_jpeg(rng: random.Random, width: int, height: int) -> bytes:
    """A photo-like JPEG: smooth colour fields, shapes and mild noise (decodes like a photo)."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter

    small = np.array([[rng.randint(0, 255) for _ in range(3)] for _ in range(16)], dtype=np.uint8).reshape(4, 4, 3)
    im = Image.fromarray(small).resize((width, height), Image.BICUBIC)
    d = ImageDraw.Draw(im)
    for _ in range(rng.randint(3, 12)):
        x, y = rng.randint(0, width - 1), rng.randint(0, height - 1)
        r = rng.randint(10, max(11, min(width, height) // 4))
        d.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randint(0, 255) for _ in range(3)))
    noise = np.random.default_rng(rng.randint(0, 2**31)).integers(-12, 13, (height, width, 3))
    arr = np.clip(np.asarray(im.filter(ImageFilter.GaussianBlur(1)), dtype=np.int16) + noise, 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=88)
    return buf.getvalue()


def text_of_tokens(tokenizer, rng: random.Random, tokens: int) -> str:
    """Words drawn at random until the text is `tokens` long under `tokenizer` (about)."""
    words: list[str] = []
    per_word = 1.5
    while True:
        words += [rng.choice(WORDS) for _ in range(max(1, int((tokens - len(words) * per_word) / per_word)))]
        n = len(tokenizer(" ".join(words), add_special_tokens=False)["input_ids"])
        if n >= tokens or len(words) > 4 * tokens:
            return " ".join(words)
        per_word = max(0.5, n / len(words))


def answer_lengths(rng: random.Random, n: int, median: int = 360, sigma: float = 0.35) -> list[int]:
    """Four-stage answer lengths (tokens): log-normal around ~380 on average, 120-1,200."""
    return [int(min(1200, max(120, median * math.exp(rng.gauss(0, sigma))))) for _ in range(n)]


def _photo(spec: tuple[int, int, int]) -> bytes:
    """A pool task: the JPEG of (seed, width, height)."""
    seed, width, height = spec
    return photo_jpeg(random.Random(seed), width, height)


def write_shards(out: Path, tokenizer, rows: int, seed: int, max_side: int = 1280, min_side: int = 336,
                 answer_median: int = 360) -> str:
    """Shards of `rows` realistic rows (a function of `seed`). The texts are drawn here, the photos
    (most of the time: ~0.1-0.2 s each at 1,280 px) encoded by a pool of processes, one per core."""
    from concurrent.futures import ProcessPoolExecutor
    from multiprocessing import get_context

    from pipeline.shards import MANIFEST, ShardWriter, write_manifest
    from pipeline.storage import Root

    root = Root(str(out))
    if root.exists(MANIFEST):
        return str(out)
    rng = random.Random(seed)
    lengths = answer_lengths(rng, rows, median=answer_median)
    texts, photos = [], []
    for n in lengths:
        ratio = rng.choice([1.0, 4 / 3, 3 / 4, 16 / 9, 9 / 16, 3 / 2, 2 / 3, 2.0])
        long_side = rng.randint(min_side, max_side)
        width, height = (long_side, int(long_side / ratio)) if ratio >= 1 else (int(long_side * ratio), long_side)
        photos.append((rng.randrange(2**31), max(min_side // 2, width), max(min_side // 2, height)))
        body = [text_of_tokens(tokenizer, rng, max(8, int(n * f))) for f in (0.12, 0.25, 0.5, 0.08)]
        answer = (f"<SUMMARY>\n{body[0]}\n</SUMMARY>\n\n<CAPTION>\n{body[1]}\n</CAPTION>\n\n"
                  f"<REASONING>\n{body[2]}\n</REASONING>\n\n<CONCLUSION>\n{body[3]}\n</CONCLUSION>")
        texts.append((text_of_tokens(tokenizer, rng, rng.randint(12, 90)) + "?", answer))
    # fork: the workers only run PIL and numpy (nothing of CUDA, which this process may have touched)
    with ProcessPoolExecutor(min(16, os.cpu_count() or 1), mp_context=get_context("fork")) as pool, \
            ShardWriter(root, "data/train", split="train", durable=False) as w:
        for i, ((question, answer), jpeg) in enumerate(zip(texts, pool.map(_photo, photos, chunksize=4))):
            w.add({"id": f"bench/{i}", "source": "synthetic", "image_bytes": jpeg, "image_path": f"{i}.jpg",
                   "conversations": [{"from": "human", "value": "<image>\n" + question},
                                     {"from": "gpt", "value": answer}]})
    write_manifest(root, w.shards)
    return str(out)


# ---------------------------------------------------------------------------------------- model


def model_folder(out: Path, cuda: bool, args) -> tuple[str, object]:
    """A model folder without weights (config + processor) for `--random-init`, and the config."""
    from transformers import AutoConfig, MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    from pipeline.demo.tiny_model import CHAT_TEMPLATE, build_tokenizer, write_tiny_model
    from pipeline.train.plan import mllama_config

    folder = out / "model"
    if folder.exists():
        shutil.rmtree(folder)
    if cuda:
        cross = [int(x) for x in args.cross_layers.split(",")]
        config = mllama_config(text_layers=args.text_layers, cross_attention_layers=cross,
                               vision_layers=args.vision_layers, global_layers=args.global_layers)
        tokenizer = build_tokenizer(0)
        image_processor = MllamaImageProcessorPil(size={"height": 560, "width": 560}, max_image_tiles=4)
        processor = MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)
        ids = {t: tokenizer.convert_tokens_to_ids(t) for t in ("<|begin_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>")}
        config.text_config.bos_token_id = ids["<|begin_of_text|>"]
        config.text_config.eos_token_id = ids["<|eot_id|>"]
        config.text_config.pad_token_id = ids["<|finetune_right_pad_id|>"]
        config.image_token_index = tokenizer.convert_tokens_to_ids("<|image|>")
        config.save_pretrained(folder)
        processor.save_pretrained(folder)
    else:
        tiny = write_tiny_model(out / "tiny_model")
        shutil.copytree(tiny, folder, ignore=shutil.ignore_patterns("*.safetensors"))
        config = AutoConfig.from_pretrained(folder)
    return str(folder), config


# ----------------------------------------------------------------------------------- the trainer

PROFILED_STEPS = 2  # after the measured steps, under torch.profiler

CONFIGS = {
    # name: extra entry-point flags
    "project": [],
    "zero2": ["--zero-stage", "2"],
    "before": ["--group-by-length", "0", "--fused-loss", "off", "--fused-kernels", "off", "--no-fused-optimizer",
               "--num-workers", "2", "--prefetch-factor", "2"],
}


def run_bounded(cmd: list[str], env: dict, log, timeout: float) -> int | None:
    """Run `cmd` with its output in `log`; its exit status, or None when it ran past `timeout` and
    was stopped. Stopped with SIGTERM first, which torchrun passes on to its workers (a SIGKILL
    would leave a worker holding the GPU for the rest of the benchmark), then SIGKILL."""
    proc = subprocess.Popen(cmd, env=env, cwd=str(REPO), stdout=log, stderr=subprocess.STDOUT)
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        return None
    except BaseException:  # e.g. Ctrl-C or the wrapper's timeout: do not leave the trainer behind
        proc.terminate()
        proc.wait()
        raise


def run_trainer(name: str, args, model: str, data: str, out: Path, cuda: bool) -> dict:
    run_dir = out / f"run-{name}"
    shutil.rmtree(run_dir, ignore_errors=True)
    steps = args.warmup + args.steps + PROFILED_STEPS  # the last ones are profiled
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun if torchrun.exists() else "torchrun"), "--standalone", "--nnodes", "1", "--nproc_per_node", "1",
           "-m", "pipeline.train", "--model", model, "--random-init", "--data", data, "--output-dir", str(run_dir),
           "--max-steps", str(steps), "--warmup-steps", "1", "--per-device-batch-size", str(args.batch),
           "--lr", "1e-5", "--num-workers", str(args.workers), "--save-every", "0", "--no-export",
           "--no-final-checkpoint", "--seed", str(args.seed), "--max-length", str(args.max_length),
           "--profile-steps", f"{steps - PROFILED_STEPS + 1}:{steps}",
           "--gradient-checkpointing" if args.checkpointing else "--no-gradient-checkpointing"]
    if args.peak_tflops:
        cmd += ["--peak-tflops", str(args.peak_tflops)]
    cmd += CONFIGS[name]
    env = {**os.environ, "PYTHONPATH": str(REPO), "LLAVACOT_TRAIN_REPORTER": "pipeline.train.report:JsonlReporter",
           "TOKENIZERS_PARALLELISM": "false"}
    if not cuda:
        env.update({"DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"})
    started = time.monotonic()
    with open(out / f"run-{name}.log", "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        returncode = run_bounded(cmd, env, log, args.run_timeout)
    wall = time.monotonic() - started
    if returncode != 0:
        tail = (out / f"run-{name}.log").read_text()[-3000:]
        error = f"no result in {args.run_timeout:.0f} s (stopped)" if returncode is None else f"exit {returncode}"
        return {"name": name, "error": error, "log_tail": tail, "wall_s": wall}
    events = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    opened = next(e for e in events if e["event"] == "open")["config"]
    metrics = [e for e in events if e["event"] == "metrics"]
    measured = [m for m in metrics if args.warmup < m["step"] <= args.warmup + args.steps]
    profiled = next((m for m in metrics if m.get("profile_device_busy_fraction") is not None
                     or "profile_steps" in m), {})
    step_s = sum(m["step_time_s"] for m in measured) / len(measured)
    mfus = [m["mfu"] for m in measured if m.get("mfu") is not None]
    useful = sum(m["useful_token_fraction"] for m in measured) / len(measured)
    return {
        "name": name, "wall_s": wall, "step_s": step_s, "samples_per_s": args.batch / step_s,
        "tokens_per_s": sum(m["tokens_per_s"] for m in measured) / len(measured),
        "mfu": sum(mfus) / len(mfus) if mfus else None,
        "tflops_per_device": sum(m["tflops_per_device"] for m in measured) / len(measured),
        "peak_memory_gib": max(m["peak_memory_gib"] for m in metrics),
        "useful_token_fraction": useful,
        "gpu_busy_fraction": profiled.get("profile_device_busy_fraction"),
        "profile_by_kind_s": profiled.get("profile_by_kind_s"),
        "profile_window_s": profiled.get("profile_window_s"),
        "profile_device_busy_s": profiled.get("profile_device_busy_s"),
        "profile_error": profiled.get("profile_error"),
        "speed": opened.get("speed"), "parameters": opened.get("parameters"), "zero_stage": opened.get("zero_stage"),
        "device_name": opened.get("device_name"), "loss": [m["loss"] for m in metrics],
        "step_times_s": [m["step_time_s"] for m in metrics],
    }


# -------------------------------------------------------------------------- plain forward+backward


def trainer_batches(data: str, model: str, args, config) -> list[dict]:
    """The micro-batches the trainer measured (same sampler, seed and grouping), collated."""
    from transformers import AutoProcessor

    from pipeline.train.collator import Collator
    from pipeline.train.data import ResumableBatchSampler, ShardDataset
    from pipeline.train.train import DEFAULTS

    ds = ShardDataset(data)
    processor = AutoProcessor.from_pretrained(model)
    sampler = ResumableBatchSampler(ds.group_rows, args.batch, seed=args.seed, window=DEFAULTS["shuffle_window"],
                                    lengths=ds.row_lengths(processor.tokenizer), group_batches=DEFAULTS["group_by_length"])
    collate = Collator(processor, max_length=args.max_length)
    batches = sampler.epoch_batches(0)[args.warmup:args.warmup + args.steps]
    return [collate([ds[i] for i in b]) for b in batches]


def plain_forward_backward(config, batches: list[dict], cuda: bool, peak: float | None) -> dict:
    """Stock Mllama (no DeepSpeed, no fused loss), forward + backward of each batch, timed; and
    FlopCounterMode's count of the first batch next to the trainer's formula."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.train.flops import micro_batch_flops
    from pipeline.train.model import make_dummy_images_inert, random_model

    device = torch.device("cuda" if cuda else "cpu")
    dtype = torch.bfloat16 if cuda else torch.float32
    model = random_model(config, dtype=dtype, attn_implementation="sdpa", device=device)
    model.config.use_cache = False
    model.train()
    make_dummy_images_inert(model)

    def run(batch):
        b = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
        b["pixel_values"] = b["pixel_values"].to(dtype)
        model(**b, use_cache=False).loss.backward()
        model.zero_grad(set_to_none=True)

    with FlopCounterMode(display=False) as counter:
        run(batches[0])
    counted = counter.get_total_flops()
    n, s = batches[0]["input_ids"].shape
    formula = micro_batch_flops(config, n, s, batches[0]["pixel_values"].shape[1])
    for batch in batches:  # warm-up: every shape once (allocator, kernel choices), then the timed pass
        run(batch)
    times, flops = [], 0
    for batch in batches:
        if cuda:
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        run(batch)
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
        flops += micro_batch_flops(config, *batch["input_ids"].shape, batch["pixel_values"].shape[1])
    seconds = sum(times)
    return {"step_s": seconds / len(times), "mfu": flops / seconds / (peak * 1e12) if peak else None,
            "flops_counted": counted, "flops_formula": formula, "times_s": times,
            "peak_memory_gib": torch.cuda.max_memory_allocated() / 2**30 if cuda else None}


def epoch_useful_fraction(data: str, model: str, args) -> dict:
    """Useful-token fraction of a whole epoch of these rows, grouped and not, with real token counts."""
    from transformers import AutoProcessor

    from pipeline.train.collator import Collator
    from pipeline.train.data import ResumableBatchSampler, ShardDataset
    from pipeline.train.train import DEFAULTS

    ds = ShardDataset(data)
    processor = AutoProcessor.from_pretrained(model)
    collate = Collator(processor, max_length=args.max_length)
    tokens = [len(collate.encode(ds[i], image=True)["input_ids"]) for i in range(len(ds))]
    out = {"rows": len(ds), "mean_tokens": sum(tokens) / len(tokens)}
    lengths = ds.row_lengths(processor.tokenizer)
    for name, k in (("grouped", DEFAULTS["group_by_length"]), ("ungrouped", 0)):
        sampler = ResumableBatchSampler(ds.group_rows, args.batch, seed=args.seed, window=DEFAULTS["shuffle_window"],
                                        lengths=lengths, group_batches=k)
        batches = sampler.epoch_batches(0)
        real = sum(tokens[i] for b in batches for i in b)
        padded = sum(len(b) * max(tokens[i] for i in b) for b in batches)
        out[name] = real / padded
    return out


# ------------------------------------------------------------------------------------------ main


def fmt(x, spec: str) -> str:
    """`x` formatted, or a dash in the same width when it is unknown (e.g. MFU on a CPU)."""
    if x is None:
        width = re.match(r"[<>^]?(\d*)", spec).group(1)
        return format("-", f">{width}") if width else "-"
    return format(x, spec)


def table(summary: dict) -> list[str]:
    lines = [f"{'config':<20}{'s/step':>8}{'samples/s':>11}{'MFU':>8}{'peak GiB':>10}{'GPU busy':>10}"
             f"{'useful tok':>12}{'step/fwd+bwd':>14}"]
    plain = summary.get("plain") or {}
    for r in summary["runs"]:
        if "error" in r:
            lines.append(f"{r['name']:<20}failed: {r['error']} (see run-{r['name']}.log)")
            continue
        ratio = r["step_s"] / plain["step_s"] if plain.get("step_s") else None
        lines.append(f"{r['name']:<20}{r['step_s']:>8.3f}{r['samples_per_s']:>11.2f}{fmt(r['mfu'], '>8.1%')}"
                     f"{r['peak_memory_gib']:>10.1f}{fmt(r['gpu_busy_fraction'], '>10.1%')}"
                     f"{fmt(r['useful_token_fraction'], '>12.1%')}{fmt(ratio, '>13.2f')}x")
    if summary.get("plain_error"):
        lines.append(f"{'plain fwd+bwd':<20}failed: {summary['plain_error'][:300]}")
    if plain:
        lines.append(f"{'plain fwd+bwd':<20}{plain['step_s']:>8.3f}{summary['batch'] / plain['step_s']:>11.2f}"
                     f"{fmt(plain['mfu'], '>8.1%')}{fmt(plain['peak_memory_gib'], '>10.1f')}")
        lines.append(f"FLOPs of one micro-batch: trainer's formula {plain['flops_formula'] / 1e12:.2f} TFLOP, "
                     f"FlopCounterMode {plain['flops_counted'] / 1e12:.2f} TFLOP "
                     f"(ratio {plain['flops_formula'] / max(1, plain['flops_counted']):.3f})")
    epoch = summary.get("epoch_useful")
    if epoch:
        lines.append(f"useful-token fraction of a whole epoch ({epoch['rows']} rows, {epoch['mean_tokens']:.0f} tokens "
                     f"on average): grouped {epoch['grouped']:.1%}, ungrouped {epoch['ungrouped']:.1%}")
    main = next((r for r in summary["runs"] if r["name"] == "project" and "error" not in r), None)
    if main and summary["cuda"]:
        ratio = main["step_s"] / plain["step_s"] if plain.get("step_s") else None
        goals = [("MFU >= 40 %", main["mfu"], lambda v: v >= 0.40),
                 ("step <= 1.15x plain fwd+bwd", ratio, lambda v: v <= 1.15),
                 ("GPU busy >= 90 %", main["gpu_busy_fraction"], lambda v: v >= 0.90),
                 ("useful tokens >= 95 %", epoch and epoch["grouped"], lambda v: v >= 0.95)]
        lines.append("goals: " + "; ".join(f"{n}: {'not measured' if v is None else 'met' if ok(v) else 'NOT met'}"
                                           for n, v, ok in goals))
        if main.get("profile_error"):
            lines.append(f"profiled steps: failed ({main['profile_error'][:300]})")
        if main.get("profile_by_kind_s"):
            by = ", ".join(f"{k} {v:.3f}s" for k, v in main["profile_by_kind_s"].items())
            lines.append(f"device time by kind over {main['profile_window_s']:.3f}s of profiled steps: {by}")
        if main.get("profile_device_busy_s"):
            # the profiler slows the host (an event per op), so the fraction above is a floor; the
            # device's busy time is hardly changed by it: over the unprofiled step time, an estimate
            per_step = main["profile_device_busy_s"] / PROFILED_STEPS
            lines.append(f"device busy {per_step:.3f}s per profiled step = {per_step / main['step_s']:.1%} of the "
                         f"unprofiled step ({main['step_s']:.3f}s): GPU busy without the profiler's overhead, about")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(HERE / "out" / "train_gpu"))
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--warmup", type=int, default=3, help="steps left out of the figures")
    ap.add_argument("--steps", type=int, default=8, help="measured steps (then 2 profiled ones)")
    ap.add_argument("--rows", type=int, default=0, help="rows of the shards; default: 384 on CUDA, 16 on CPU")
    ap.add_argument("--answer-median", type=int, default=0,
                    help="median answer length in tokens; default: 360 on CUDA (~380 on average), 100 on CPU")
    ap.add_argument("--max-side", type=int, default=0, help="largest image side; default: 1280 on CUDA, 640 on CPU")
    ap.add_argument("--max-length", type=int, default=2048)
    ap.add_argument("--vision-layers", type=int, default=8)
    ap.add_argument("--global-layers", type=int, default=2)
    ap.add_argument("--text-layers", type=int, default=10)
    ap.add_argument("--cross-layers", default="3,8")
    ap.add_argument("--workers", type=int, default=0, help="loader workers; default: 6 on CUDA, 1 on CPU")
    ap.add_argument("--checkpointing", action="store_true", help="activation checkpointing on (default off: fits)")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="the GPU's bf16 peak; default: by its name")
    ap.add_argument("--compare", action="store_true", help="also ZeRO-2 and the configuration shipped before")
    ap.add_argument("--budget-s", type=float, default=170.0, help="no further comparison run after this")
    ap.add_argument("--run-timeout", type=float, default=420.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--readme", action="store_true", help="write the figures into benchmarks/README.md")
    args = ap.parse_args()
    started = time.monotonic()
    import torch

    cuda = torch.cuda.is_available()
    args.rows = args.rows or (384 if cuda else 16)
    args.answer_median = args.answer_median or (360 if cuda else 100)
    args.max_side = args.max_side or (1280 if cuda else 640)
    args.workers = args.workers or (6 if cuda else 1)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    model, config = model_folder(out, cuda, args)
    from transformers import AutoProcessor

    tokenizer = AutoProcessor.from_pretrained(model).tokenizer
    data = write_shards(out / f"shards-{args.rows}-{args.seed}-{args.answer_median}-{args.max_side}", tokenizer,
                        args.rows, args.seed, max_side=args.max_side, answer_median=args.answer_median)
    print(f"model folder {model}, shards {data} ({time.monotonic() - started:.0f} s)", flush=True)
    summary = {"cuda": cuda, "batch": args.batch, "args": vars(args), "runs": []}
    for name in (["project", "zero2", "before"] if args.compare else ["project"]):
        if summary["runs"] and time.monotonic() - started > args.budget_s * 0.55:
            print(f"skipping {name}: over the time budget", flush=True)
            continue
        summary["runs"].append(run_trainer(name, args, model, data, out, cuda))
        print(f"{name}: {json.dumps({k: v for k, v in summary['runs'][-1].items() if k not in ('loss', 'step_times_s', 'log_tail')})}",
              flush=True)
    from pipeline.train.flops import peak_tflops

    device_name = torch.cuda.get_device_name(0) if cuda else "cpu"
    peak = peak_tflops(device_name, args.peak_tflops or None)
    try:
        summary["plain"] = plain_forward_backward(config, trainer_batches(data, model, args, config), cuda, peak)
    except Exception as exc:  # noqa: BLE001 - report the baseline's failure, keep the trainer's figures
        summary["plain"] = None
        summary["plain_error"] = f"{type(exc).__name__}: {exc}"
        print(f"plain forward+backward failed: {summary['plain_error']}", flush=True)
    summary["epoch_useful"] = epoch_useful_fraction(data, model, args)
    main_run = next((r for r in summary["runs"] if "error" not in r), {})
    params = main_run.get("parameters")
    header = (f"train_gpu: {device_name}, Mllama "
              f"{'11B widths' if cuda else 'tiny widths'} (vision {config.vision_config.num_hidden_layers}+"
              f"{config.vision_config.num_global_layers}, text {config.text_config.num_hidden_layers} / cross "
              f"{config.text_config.cross_attention_layers}), {fmt(params and params / 1e9, '.2f')} B params, batch "
              f"{args.batch}, {args.steps} measured steps after {args.warmup}, peak {fmt(peak, 'g')} TFLOP/s, "
              f"wall {time.monotonic() - started:.0f} s")
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=str) + "\n")  # before the table
    lines = [header] + table(summary)
    print("\n".join(lines))
    if args.readme:
        write_readme(lines, args, cuda)
    return 0 if main_run else 1


def write_readme(lines: list[str], args, cuda: bool) -> None:
    # the command that produced these figures (without --readme)
    command = " ".join(["python benchmarks/train_gpu.py"] + [a for a in sys.argv[1:] if a != "--readme"])
    where = "one GPU" if cuda else "CPU, tiny widths (a smoke run: the GPU figures are still to be recorded)"
    write_readme_section("train_gpu", (
        "The training entry point at GPU speed: `torchrun --nproc_per_node 1 -m pipeline.train` on an Mllama of "
        "Llama-3.2-11B-Vision's widths with fewer layers (vision 8 + 2, text 10 with cross-attention at 3 and 8: "
        "3.5 B parameters, random weights built on the GPU), realistic shards (JPEG photos of 336-1,280 px, four-stage "
        "answers of ~380 tokens), batch 4, the project's defaults; plain PyTorch forward + backward of the same "
        "batches; FLOPs by the trainer's formula and by FlopCounterMode. Goals (issue 9): MFU >= 40 % of 989 TFLOP/s, "
        "step <= 1.15x plain forward + backward, GPU busy >= 90 %, useful tokens >= 95 %.\n\n"
        f"Command (GPU machine, repository root, venv active): `{command}` (about 3 minutes; logs, metrics, the "
        "profiler trace and summary.json in --out; `bash benchmarks/gpu.sh` runs it with search_gpu, each under "
        "a time limit)\n\n"
        f"Latest run ({time.strftime('%Y-%m-%d')}, Python {platform.python_version()}, {where}):\n\n"
        "```\n" + "\n".join(lines) + "\n```\n"))


if __name__ == "__main__":
    sys.exit(main())
