"""Reader/ingest throughput and memory on a ShareGPT4V-sized LLaVA JSON (a script, not a test).

Generates (once, cached under the output folder) a LLaVA-format JSON array of N ShareGPT4V-style
records (1-3 rounds, realistic text lengths) referencing ~1,000 small real JPEG files, then runs
`pipeline.ingest.ingest_source("sharegpt4v", ...)` in a child process and prints:
  rows/s                        goal >= 100,000 on this 2-core machine
  peak RSS of the child         (and the RSS of the same interpreter with its imports loaded)
  output table size             pyarrow Table.nbytes of samples.parquet read back
  peak / output                 goal < 3
With --readme it (re)writes the "readers" section of benchmarks/README.md with the figures and the
exact command. Usage:
  python benchmarks/readers.py [--rows 500000] [--images 1000] [--out benchmarks/out/readers] [--readme]
  python benchmarks/readers.py --profile     # cProfile of the ingest, top functions
"""
from __future__ import annotations

import argparse
import io
import json
import os
import platform
import random
import resource
import subprocess
import sys
import time
from pathlib import Path

from readme import write_readme_section  # benchmarks/readme.py (the script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))

GOAL_ROWS_PER_S = 100_000
GOAL_PEAK_RATIO = 3.0
DATA_VERSION = "1"

COLLECTIONS = [
    ("coco/train2017", "{:012d}.jpg"),
    ("sam/images", "sa_{}.jpg"),
    ("llava/llava_pretrain/images/00000", "{:09d}.jpg"),
    ("wikiart/images", "painting_{}.jpg"),
    ("web-landmark/images", "landmark_{}.jpg"),
    ("gqa/images", "{}.jpg"),
]

WORDS = (
    "the image shows a large small red blue green wooden metal old modern building street person "
    "people standing sitting near next to behind in front of under over table chair window door car "
    "tree sky cloud water river mountain field grass road sign light shadow background foreground "
    "left right center top bottom corner wearing holding looking white black dark bright colorful "
    "scene appears to be is are with and of on at while several two three many group dog cat bird "
    "plate food cup glass bottle book screen wall floor roof bridge boat train bus bicycle umbrella"
).split()
QUESTIONS = [
    "Describe this image in detail.",
    "What do you see happening in this image?",
    "What is the man on the left holding?",
    "How many people are visible in the picture?",
    "What color is the car parked near the building?",
    "Can you explain the purpose of the sign in the foreground?",
    "What might be the reason for the crowd gathering here?",
    "Is it daytime or nighttime in this scene? Answer the question using a single word or phrase.",
    "What type of animal is shown on the table?",
    "Write a short story inspired by this painting.",
]


def sentence(rng: random.Random) -> str:
    n = rng.randint(8, 22)
    words = [rng.choice(WORDS) for _ in range(n)]
    return " ".join(words).capitalize() + "."


def paragraph(rng: random.Random, sentences: int) -> str:
    return " ".join(sentence(rng) for _ in range(sentences))


def image_files(n_images: int) -> list[str]:
    return [
        f"{folder}/{pattern.format(10_000 + i)}"
        for i in range(n_images)
        for folder, pattern in [COLLECTIONS[i % len(COLLECTIONS)]]
    ]


def generate(root: Path, rows: int, n_images: int, seed: int = 0) -> Path:
    """Write the source folder (images + sharegpt4v/bench.json). Cached: a marker names the
    parameters, so a second run with the same ones reuses the files."""
    marker = root / ".bench.json"
    params = {"version": DATA_VERSION, "rows": rows, "images": n_images, "seed": seed}
    if marker.exists() and json.loads(marker.read_text()) == params:
        return root / "sharegpt4v" / "bench.json"
    from PIL import Image, ImageDraw

    rng = random.Random(seed)
    paths = image_files(n_images)
    for i, rel in enumerate(paths):
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        im = Image.new("RGB", (64, 48), (rng.randrange(256), rng.randrange(256), rng.randrange(256)))
        ImageDraw.Draw(im).ellipse([8, 8, 40, 40], fill=(255 - i % 256, i % 256, 128))
        buf = io.BytesIO()
        im.save(buf, format="JPEG", quality=80)
        p.write_bytes(buf.getvalue())
    # Pools of texts, so generating 500k records does not cost minutes: captions of ShareGPT4V
    # length (~900 characters on average), short VQA answers and medium explanations.
    captions = [paragraph(rng, rng.randint(7, 14)) for _ in range(3000)]
    short = [rng.choice(["Yes", "No", "Two", "Red", "A dog", "Daytime", "On the table", "3"]) for _ in range(50)]
    medium = [paragraph(rng, rng.randint(1, 4)) for _ in range(3000)]
    follow = [sentence(rng).rstrip(".") + "?" for _ in range(2000)]
    out = root / "sharegpt4v" / "bench.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    dumps = json.JSONEncoder(ensure_ascii=False).encode
    with open(out, "w", encoding="utf-8") as f:
        f.write("[\n")
        for i in range(rows):
            kind = rng.random()
            q = rng.choice(QUESTIONS)
            if kind < 0.45:  # a caption record, one round
                turns = [("<image>\n" + q, rng.choice(captions))]
            else:  # a conversation, 1-3 rounds mixing short and medium answers
                k = rng.randint(1, 3)
                turns = []
                for j in range(k):
                    question = ("<image>\n" + q) if j == 0 else rng.choice(follow)
                    answer = rng.choice(short) if rng.random() < 0.4 else rng.choice(medium)
                    turns.append((question, answer))
            conv = []
            for question, answer in turns:
                conv.append({"from": "human", "value": question})
                conv.append({"from": "gpt", "value": answer})
            record = {"id": f"{i:09d}", "image": paths[rng.randrange(n_images)], "conversations": conv}
            f.write(dumps(record))
            f.write(",\n" if i + 1 < rows else "\n")
        f.write("]\n")
    marker.write_text(json.dumps(params))
    return out


def child(src: str, out: str, profile: bool) -> None:
    """Runs in a fresh interpreter: imports, baseline RSS, ingest, peak RSS -> JSON on stdout."""
    import pyarrow.parquet as pq  # noqa: F401  (part of the baseline: the ingest needs it)

    from pipeline.ingest import ingest_source
    from pipeline.storage import Root
    import pipeline.sources.sharegpt4v  # noqa: F401

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    thread0 = time.thread_time()
    t0 = time.perf_counter()
    if profile:
        import cProfile
        import pstats

        prof = cProfile.Profile()
        summary = prof.runcall(ingest_source, "sharegpt4v", Root(src), Root(out))
        stats = pstats.Stats(prof, stream=sys.stderr).sort_stats("tottime")
        stats.print_stats(25)
    else:
        summary = ingest_source("sharegpt4v", Root(src), Root(out))
    seconds = time.perf_counter() - t0
    main_cpu = time.thread_time() - thread0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    peak = ru1.ru_maxrss * 1024
    print(json.dumps({
        "rows": summary.rows, "quarantined": summary.quarantined, "seconds": seconds, "cpu_seconds": cpu,
        "main_cpu_seconds": main_cpu,
        "baseline_rss": baseline, "peak_rss": peak, "images_checked": summary.images_checked,
    }))


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f} MB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=500_000)
    ap.add_argument("--images", type=int, default=1000)
    ap.add_argument("--out", default=str(HERE / "out" / "readers"))
    ap.add_argument("--repeat", type=int, default=3, help="ingest runs (fresh processes); the best is reported")
    ap.add_argument("--profile", action="store_true", help="cProfile the ingest (slower; figures not comparable)")
    ap.add_argument("--readme", action="store_true", help="write the figures into benchmarks/README.md")
    ap.add_argument("--child", nargs=2, metavar=("SRC", "OUT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.profile)
        return

    base = Path(args.out).resolve()
    src, out = base / "source", base / "ingested"
    t0 = time.perf_counter()
    json_path = generate(src, args.rows, args.images)
    gen_s = time.perf_counter() - t0
    json_bytes = json_path.stat().st_size
    print(f"source: {args.rows:,} records, {args.images:,} images, JSON {mb(json_bytes)} "
          f"({json_bytes / args.rows:,.0f} bytes a record; ready in {gen_s:.1f} s)")

    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", str(src), str(out)]
    if args.profile:
        cmd.append("--profile")
    load = os.getloadavg()[0]
    runs = []
    for _ in range(1 if args.profile else args.repeat):
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=str(REPO))
        if proc.returncode != 0:
            sys.stderr.write(proc.stderr)
            raise SystemExit(f"ingest child failed with exit code {proc.returncode}")
        if args.profile:
            sys.stderr.write(proc.stderr)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    # each run is a fresh interpreter; the fastest is the least disturbed by other load on the machine
    res = min(runs, key=lambda r: r["seconds"])
    res["peak_rss"] = max(r["peak_rss"] for r in runs)
    children_peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024
    all_s = sorted(r["seconds"] for r in runs)

    import pyarrow.parquet as pq

    table = pq.read_table(out / "samples.parquet")
    out_bytes = table.nbytes
    parquet_bytes = (out / "samples.parquet").stat().st_size
    del table

    rows_s = res["rows"] / res["seconds"]
    peak = max(res["peak_rss"], children_peak)
    ratio = peak / out_bytes
    ratio_net = (peak - res["baseline_rss"]) / out_bytes
    ok_speed = rows_s >= GOAL_ROWS_PER_S
    ok_mem = ratio < GOAL_PEAK_RATIO
    lines = [
        f"rows ingested        {res['rows']:,} (quarantined: {res['quarantined'] or 'none'}; images checked: {res['images_checked']:,})",
        f"time                 {res['seconds']:.2f} s (best of {len(runs)} runs; all: {', '.join(f'{x:.2f}' for x in all_s)} s)",
        f"throughput           {rows_s:,.0f} rows/s   goal >= {GOAL_ROWS_PER_S:,}   ratio {rows_s / GOAL_ROWS_PER_S:.2f}x  [{'met' if ok_speed else 'NOT met'}]",
        f"CPU time             {res['cpu_seconds']:.2f} s in that run, all threads ({res['cpu_seconds'] / res['seconds']:.2f} cores busy on average); load average before the runs: {load:.2f}",
        f"reader thread        {res['main_cpu_seconds']:.2f} s of CPU = {res['rows'] / res['main_cpu_seconds']:,.0f} rows per CPU-second "
        f"(the wall rate when the reader thread has a core to itself; the Parquet writer runs on another thread)",
        f"JSON read            {mb(json_bytes)} ({json_bytes / args.rows:,.0f} bytes a record) at {json_bytes / 2**20 / res['seconds']:,.0f} MB/s",
        f"peak RSS (child)     {mb(peak)}   (interpreter + imports alone: {mb(res['baseline_rss'])})",
        f"output table         {mb(out_bytes)} in memory (Table.nbytes); {mb(parquet_bytes)} as Parquet",
        f"peak / output        {ratio:.2f}   goal < {GOAL_PEAK_RATIO:g}  [{'met' if ok_mem else 'NOT met'}]   (net of imports: {ratio_net:.2f})",
    ]
    if args.profile:
        lines.append("(profiled run: the timing includes cProfile overhead)")
    print("\n".join(lines))
    if args.readme and not args.profile:
        command = "python benchmarks/readers.py --readme"
        if args.rows != 500_000 or args.images != 1000:
            command += f" --rows {args.rows} --images {args.images}"
        if args.repeat != 3:
            command += f" --repeat {args.repeat}"
        machine = f"{os.cpu_count()} CPUs, Python {platform.python_version()}, {platform.machine()}"
        write_readme_section(
            "readers",
            "ShareGPT4V reader + central ingest (`pipeline.ingest.ingest_source`) on a generated "
            f"LLaVA-format JSON: {args.rows:,} records (1-3 rounds), {args.images:,} real JPEG files.\n\n"
            f"Command (from the repository root, venv active): `{command}`\n\n"
            f"Latest run ({time.strftime('%Y-%m-%d')}, {machine}):\n\n```\n" + "\n".join(lines) + "\n```\n\n"
            "How it reads: msgspec splits the file into records without decoding them (a local file is "
            "memory-mapped, so a 1.5 GB file costs page cache, not process memory), Arrow's JSON reader "
            "parses 20,000 records at a time straight into columns, and the checks and canonical columns "
            "are Arrow compute kernels; records that fail a check go through the per-record Python path. "
            "Images are fully decoded on a thread pool (1,000 here). Parquet compression and the content "
            "hash run on a background thread. What bounds it: Arrow's JSON parse (about half the reader "
            "thread) and, on the writer thread, zstd. The machine is shared by several agents: the wall "
            "rate depends on the load average printed with it; the reader-thread CPU rate is the figure "
            "that does not. The best of several fresh-process runs is reported; `--profile` prints a "
            "cProfile of one run.\n",
        )


if __name__ == "__main__":
    main()
