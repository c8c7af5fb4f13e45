"""Training-step throughput and memory of DeepSpeed ZeRO-2 vs ZeRO-3 (a script, not a test).

Runs the real entry point (`torchrun --standalone --nproc_per_node R -m pipeline.train`) on the
embedded tiny Mllama and a synthetic set of shards (two thirds with an image), once per ZeRO stage,
each in a fresh process tree, and prints per stage:
  tokens/s, samples/s, ms per optimizer step   steady state: the steps after --warmup, from the
                                               metrics.jsonl timestamps rank 0 writes
  peak RSS                                     the largest process of the tree (a rank), from
                                               getrusage(RUSAGE_CHILDREN) of a wrapper process
  model FLOPs utilisation (CUDA only)          6 x parameters x tokens/s / (ranks x peak FLOP/s);
                                               peak from --peak-tflops or the GPU's name
and the ratios ZeRO-3 / ZeRO-2. On CPU the ranks use DeepSpeed's CPU accelerator (gloo). The tiny
model (0.3 M parameters) makes this a regression check of the step's fixed costs (partitioning,
gathers, communication, the collator), not a forecast for 11 B parameters.

    python benchmarks/train_step.py [--steps 12] [--warmup 3] [--ranks 2] [--batch 2] [--repeat 1] [--readme]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import re
import subprocess
import sys
import time
from pathlib import Path

from readme import write_readme_section  # benchmarks/readme.py (the script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

WRAPPER = """
import resource, subprocess, sys
code = subprocess.run(sys.argv[1:]).returncode
print("PEAK_RSS_KB", resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, flush=True)
sys.exit(code)
"""


def _png(n: int, seed: int) -> bytes:
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    im = Image.new("RGB", (112, 84), "white")
    d = ImageDraw.Draw(im)
    for _ in range(n):
        x, y = rng.randint(2, 96), rng.randint(2, 68)
        d.ellipse((x, y, x + 12, y + 12), fill=(rng.randint(0, 255), 40, 200))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


def write_dataset(out: Path, rows: int) -> str:
    from pipeline.shards import MANIFEST, ShardWriter, write_manifest
    from pipeline.stages import render
    from pipeline.storage import Root

    root = Root(str(out))
    if root.exists(MANIFEST):
        return str(out)
    with ShardWriter(root, "data/train", row_group_rows=8, split="train") as w:
        for i in range(rows):
            n = 1 + i % 6
            image = i % 3 != 2
            answer = render({"summary": "I will count the circles in the image and report the number.",
                             "caption": f"The image shows {n} coloured circles on a white background.",
                             "reasoning": " ".join(f"Circle {k + 1} is counted." for k in range(n)) + f" So there are {n}.",
                             "conclusion": str(n)})
            w.add({"id": f"bench/{i}", "source": "synthetic", "image_bytes": _png(n, i) if image else None,
                   "image_path": f"{i}.png" if image else None,
                   "conversations": [{"from": "human", "value": ("<image>\n" if image else "") + "How many circles are there?"},
                                     {"from": "gpt", "value": answer}]})
    write_manifest(root, w.shards)
    return str(out)


def run_stage(stage: int, args, model: str, data: str, out: Path) -> dict:
    run_dir = out / f"zero{stage}"
    if run_dir.exists():
        import shutil

        shutil.rmtree(run_dir)
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun if torchrun.exists() else "torchrun"), "--standalone", "--nnodes", "1",
           "--nproc_per_node", str(args.ranks), "-m", "pipeline.train", "--model", model, "--data", data,
           "--output-dir", str(run_dir), "--zero-stage", str(stage), "--max-steps", str(args.steps),
           "--per-device-batch-size", str(args.batch), "--lr", "1e-4", "--num-workers", "0",
           "--save-every", "0", "--no-export", "--seed", "0"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "LLAVACOT_TRAIN_REPORTER": "pipeline.train.report:JsonlReporter"}
    if not args.cuda:
        env["DS_ACCELERATOR"] = "cpu"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "-c", WRAPPER, *cmd], env=env, cwd=str(out), capture_output=True, text=True)
    wall = time.monotonic() - t0
    if proc.returncode != 0:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"ZeRO-{stage} run failed ({proc.returncode})")
    peak_kb = int(re.search(r"PEAK_RSS_KB (\d+)", proc.stdout).group(1))
    events = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]
    opened = next(e for e in events if e["event"] == "open")["config"]
    steps = [e for e in events if e["event"] == "metrics"]
    if len(steps) <= args.warmup + 1:
        raise SystemExit(f"--steps must exceed --warmup + 1 (got {len(steps)} steps)")
    a, b = steps[args.warmup], steps[-1]
    dt = b["time"] - a["time"]
    n_steps = b["step"] - a["step"]
    return {"stage": stage, "tokens_per_s": (b["tokens"] - a["tokens"]) / dt, "samples_per_s": (b["samples"] - a["samples"]) / dt,
            "ms_per_step": 1000 * dt / n_steps, "peak_rss_mb": peak_kb / 1024, "wall_s": wall,
            "parameters": opened.get("parameters"), "world_size": opened.get("world_size"),
            "loss_first": steps[0]["loss"], "loss_last": steps[-1]["loss"], "measured_steps": n_steps}


def peak_flops(args) -> float | None:
    import torch

    from pipeline.train.flops import peak_tflops

    tflops = peak_tflops(torch.cuda.get_device_name(0), args.peak_tflops or None)
    return tflops * 1e12 if tflops else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=12, help="optimizer steps per stage")
    ap.add_argument("--warmup", type=int, default=3, help="first steps left out of the rates")
    ap.add_argument("--ranks", type=int, default=2, help="processes (one per GPU on CUDA)")
    ap.add_argument("--batch", type=int, default=2, help="per-device batch size")
    ap.add_argument("--rows", type=int, default=96, help="rows of the synthetic dataset")
    ap.add_argument("--repeat", type=int, default=1, help="runs per stage; the fastest is reported")
    ap.add_argument("--model", default="", help="model folder or hub id; default: the embedded tiny model")
    ap.add_argument("--peak-tflops", type=float, default=0.0, help="CUDA: the GPU's peak, for the utilisation")
    ap.add_argument("--out", default=str(HERE / "out" / "train_step"))
    ap.add_argument("--readme", action="store_true", help="write the figures into benchmarks/README.md")
    args = ap.parse_args()
    import torch

    args.cuda = torch.cuda.is_available()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from pipeline.demo.tiny_model import write_tiny_model

    model = args.model or write_tiny_model(out / "tiny_model")
    data = write_dataset(out / "dataset", args.rows)
    load = os.getloadavg()[0]
    # stages alternate within each repeat, so a load change on this shared machine hits both alike
    runs = [[run_stage(stage, args, model, data, out) for stage in (2, 3)] for _ in range(args.repeat)]
    results = [max((r[i] for r in runs), key=lambda x: x["tokens_per_s"]) for i in range(2)]
    flops = peak_flops(args) if args.cuda else None

    lines = []
    for r in results:
        lines.append(f"ZeRO-{r['stage']}   tokens/s {r['tokens_per_s']:9,.0f}   samples/s {r['samples_per_s']:6.2f}   "
                     f"{r['ms_per_step']:7.1f} ms/step   peak RSS {r['peak_rss_mb']:6,.0f} MB   "
                     f"(loss {r['loss_first']:.3f} -> {r['loss_last']:.3f}, {r['wall_s']:.0f} s with start-up)")
        if flops and r["parameters"]:
            mfu = 6 * r["parameters"] * r["tokens_per_s"] / (r["world_size"] * flops)
            lines.append(f"         model FLOPs utilisation {100 * mfu:.2f} % (6 x {r['parameters']:,} parameters x tokens/s)")
    z2, z3 = results
    lines.append(f"ZeRO-3 / ZeRO-2   tokens/s {z3['tokens_per_s'] / z2['tokens_per_s']:.2f}x   "
                 f"peak RSS {z3['peak_rss_mb'] / z2['peak_rss_mb']:.2f}x")
    device = torch.cuda.get_device_name(0) if args.cuda else f"CPU ({os.cpu_count()} cores, gloo)"
    header = (f"{args.ranks} ranks on {device}; tiny Mllama ({z2['parameters']:,} parameters); batch {args.batch} per rank; "
              f"{z2['measured_steps']} steps measured after {args.warmup} warm-up steps; best of {args.repeat} run(s) per stage; "
              f"load average before: {load:.2f}")
    print(header)
    print("\n".join(lines))
    if args.readme:
        command = "python benchmarks/train_step.py --readme" + (f" --repeat {args.repeat}" if args.repeat > 1 else "")
        today = time.strftime("%Y-%m-%d")
        write_readme_section("train_step", (
            "Optimizer-step throughput and peak memory of DeepSpeed ZeRO-2 and ZeRO-3 through the real entry point "
            "(`torchrun ... -m pipeline.train`) on the embedded tiny Mllama and synthetic shards (two thirds with an image); "
            "with CUDA it also prints model FLOPs utilisation.\n\n"
            f"Command (from the repository root, venv active): `{command}`\n\n"
            f"Latest run ({today}, Python {platform.python_version()}, {platform.machine()}): {header}\n\n"
            "```\n" + "\n".join(lines) + "\n```\n\n"
            "Rates are steady state (from rank 0's metrics timestamps, warm-up steps excluded); peak RSS is the largest "
            "process of the run (a rank: the interpreter with torch, DeepSpeed and transformers is most of it at this "
            "model size). With 0.3 M parameters the figures measure the fixed cost of a step (ZeRO-3's parameter "
            "gathers and partitioning, gloo all-reduces, the collator), which is what a regression would change.\n"))


if __name__ == "__main__":
    main()
