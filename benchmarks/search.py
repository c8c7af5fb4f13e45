"""Cost of stage-level beam search: the efficient core vs the public code's structure (naive) vs direct.

On a tiny Mllama with fixed per-stage token budgets, for N = 2, 4, 8, in one run: wall time, model
forward tokens, forward calls, generate and judge calls of `stage_beam` on the efficient core and on
the naive core (every candidate a separate `generate` re-encoding image and prefix, stop strings
found by decoding the whole sequence after every token, judge calls one by one), and of `direct`.

Goals (at N = 4): efficient >= 5x faster than naive, and <= 3x direct; from N = 4 to N = 8 efficient
grows by <= 1.6x.

Model: --model PATH, else a trained tiny model under the data root (data/finetuned_model/...), else
the embedded tiny model (pipeline.demo.tiny_model) taught here to write the four tags
(--train-steps, default 300, about a minute of CPU once; cached in benchmarks/out/search/), or with
its random weights (--train-steps 0: no candidate ever closes its tag, so every one runs to its
budget). End of text is suppressed in every mode, so a candidate ends at its closing tag or its budget.

Every cell runs --repeat times per round, the cells interleaved, for --rounds rounds; every run of a
cell does the same work (the sampler is reseeded). The best wall time and the best CPU time of the
process are reported (one torch thread: CPU time is what the work costs, wall time also holds what
others on the machine take), and the N=4 ratios of each round, to show the spread.

  python benchmarks/search.py [--model PATH] [--train-steps 300] [--repeat 7] [--rounds 3] [--threads 1] [--readme]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from datetime import date
from pathlib import Path

from readme import write_readme_section  # benchmarks/readme.py (the script's folder is on sys.path)

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

BUDGETS = {"summary": 24, "caption": 40, "reasoning": 48, "conclusion": 16}
QUESTION = "How many red cubes are in the image? Options: A. 1 B. 2 C. 3 D. 4"


def find_model(explicit: str | None, train_steps: int) -> tuple[str, str]:
    if explicit:
        return explicit, "given"
    data = Path(os.environ.get("LLAVACOT_DATA_ROOT", ROOT / "data"))
    found = []
    for cfg in (data / "finetuned_model").rglob("config.json") if (data / "finetuned_model").is_dir() else []:
        try:
            if json.loads(cfg.read_text()).get("model_type") == "mllama" and \
                    (cfg.parent / "tokenizer.json").exists():
                found.append(cfg.parent)
        except (OSError, ValueError):
            pass
    if found:
        return str(max(found, key=lambda p: p.stat().st_mtime)), "trained (data root)"
    from pipeline.demo.tiny_model import write_tiny_model

    base = write_tiny_model(HERE / "out" / "search" / "tiny_model")
    if train_steps <= 0:
        return base, "embedded tiny model, random weights"
    import hashlib

    from pipeline.search import judge

    prompts = hashlib.sha256(repr((judge.HEADER, judge.PRECHECK, judge.CRITERIA)).encode()).hexdigest()[:8]
    return train_tags(base, HERE / "out" / "search" / f"tiny_tags_judge_{train_steps}_{prompts}", train_steps), \
        f"embedded tiny model taught the four tags and the judge's reply format ({train_steps} steps here)"


def train_tags(base: str, out: Path, steps: int, seed: int = 0) -> str:
    """Teach the tiny model the four-stage skeleton (next-token loss on the answers of the embedded
    corpus: question -> four-stage answer) and the judge's reply format (judge prompts built by
    pipeline.search.judge -> a bare "1"/"2" or "correct"/"incorrect", at random: the format, not
    judgement), batch 8 (6 + 2), AdamW. Written once; reused when present."""
    if (out / "trained.json").is_file():
        return str(out)
    import random

    import torch
    from PIL import Image

    from pipeline.demo.tiny_model import corpus
    from pipeline.search.core import load

    from pipeline.search.judge import CHECK, CRITERIA, compare_prompt, precheck_prompt, stage_body
    from pipeline.stages import STAGES

    model, processor = load(base)
    tok = processor.tokenizer
    lines = corpus(seed + 1, 400)
    pairs = list(zip(lines[0::2], lines[1::2]))
    rng = random.Random(seed)
    # a quarter of the examples are judge prompts answered with a bare choice, as the judge asks
    judge_pairs = []
    for _ in range(len(pairs) // 3):
        (q, a1), (_, a2) = rng.sample(pairs, 2)
        kind = rng.choice(STAGES)
        if kind == "reasoning" and rng.random() < 0.5:
            judge_pairs.append((precheck_prompt(q, "", stage_body(kind, a1)), rng.choice(CHECK)))
        else:
            ctx = a1.split(f"<{kind.upper()}>")[0] if kind in CRITERIA else ""
            judge_pairs.append((compare_prompt(kind, q, ctx, stage_body(kind, a1), stage_body(kind, a2)),
                                rng.choice("12")))
    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    img = Image.new("RGB", (56, 56), "red")

    def chat(q):
        return processor.apply_chat_template([{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}],
                                             add_generation_prompt=True)

    ref = processor(images=img, text=chat("x"), return_tensors="pt")
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    model.train()
    torch.manual_seed(seed)
    b = 8
    for step in range(steps):
        seqs, labels = [], []
        for q, a in rng.sample(pairs, b - 2) + rng.sample(judge_pairs, 2):
            p_ids = tok(chat(q))["input_ids"]
            a_ids = tok(a, add_special_tokens=False)["input_ids"] + [eot]
            seqs.append(p_ids + a_ids)
            labels.append([-100] * len(p_ids) + a_ids)
        width = max(map(len, seqs))
        ids = torch.full((b, width), tok.pad_token_id)
        lab = torch.full((b, width), -100)
        att = torch.zeros((b, width), dtype=torch.long)
        xm = torch.zeros((b, width) + tuple(ref["cross_attention_mask"].shape[2:]), dtype=torch.long)
        for i, (sq, lb) in enumerate(zip(seqs, labels)):
            ids[i, :len(sq)], lab[i, :len(lb)], att[i, :len(sq)] = torch.tensor(sq), torch.tensor(lb), 1
            xm[i, sq.index(model.config.image_token_index):len(sq)] = ref["cross_attention_mask"][0, -1]
        loss = model(input_ids=ids, attention_mask=att, labels=lab, cross_attention_mask=xm,
                     pixel_values=ref["pixel_values"].expand(b, *ref["pixel_values"].shape[1:]),
                     aspect_ratio_ids=ref["aspect_ratio_ids"].expand(b, -1),
                     aspect_ratio_mask=ref["aspect_ratio_mask"].expand(b, -1, -1)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    processor.save_pretrained(out)
    (out / "trained.json").write_text(json.dumps({"steps": steps, "final_loss": round(float(loss.detach()), 4)}) + "\n")
    return str(out)


def image():
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (120, 80), "white")
    d = ImageDraw.Draw(im)
    for x in (10, 40, 70):
        d.rectangle([x, 20, x + 20, 40], fill="red")
    d.ellipse([95, 45, 115, 65], fill="blue")
    return im


def measure(strategy, core, img, config):
    from pipeline.search import run

    core.reseed(0)              # every repetition of a cell does the same work
    c0 = time.process_time()
    res = run(strategy, core, img, QUESTION, config)
    res.cpu = time.process_time() - c0
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model")
    ap.add_argument("--train-steps", type=int, default=300,
                    help="teach the embedded tiny model the tags first (0: random weights)")
    ap.add_argument("--beams", default="2,4,8")
    ap.add_argument("--repeat", type=int, default=7, help="runs per cell (best reported)")
    ap.add_argument("--rounds", type=int, default=3, help="whole measurements, one after the other (spread)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (the machine is shared)")
    ap.add_argument("--readme", action="store_true", help="write the figures into benchmarks/README.md")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    from pipeline.search import SearchConfig
    from pipeline.search.core import GenerationCore, NaiveCore, load

    path, origin = find_model(args.model, args.train_steps)
    model, processor = load(path)
    params = sum(p.numel() for p in model.parameters())
    img = image()
    beams = [int(b) for b in args.beams.split(",")]
    eff = GenerationCore(model, processor, suppress_eos=True)
    naive = NaiveCore(model, processor, suppress_eos=True)
    load_before = os.getloadavg()[0]

    # warm-up (first-call allocations, lazy imports)
    measure("stage_beam", eff, img, SearchConfig(beam=2, budgets={k: 4 for k in BUDGETS}, give_up_without_tags=False))
    measure("stage_beam", naive, img, SearchConfig(beam=2, budgets={k: 4 for k in BUDGETS}, give_up_without_tags=False))

    cells = [("direct", "direct", eff, 1)] + [(("efficient", n), "stage_beam", eff, n) for n in beams] + \
            [(("naive", n), "stage_beam", naive, n) for n in beams]
    runs: dict = {key: [] for key, *_ in cells}
    per_round = []                             # the N=4 ratios of each round, to show the spread
    for _ in range(args.rounds):
        mark = {key: len(rs) for key, rs in runs.items()}
        for _ in range(args.repeat):           # interleaved, so a busy spell hits every cell alike
            for key, strategy, core, n in cells:
                runs[key].append(measure(strategy, core, img, SearchConfig(beam=n, budgets=BUDGETS, give_up_without_tags=False)))
        if 4 in beams:
            rb = {key: min(rs[mark[key]:], key=lambda r: r.cpu) for key, rs in runs.items()}
            per_round.append((rb[("naive", 4)].cpu / rb[("efficient", 4)].cpu,
                              rb[("efficient", 4)].cpu / rb["direct"].cpu))
    best = {key: min(rs, key=lambda r: r.seconds) for key, rs in runs.items()}
    cpu = {key: min(r.cpu for r in rs) for key, rs in runs.items()}
    wall = {key: best[key].seconds for key in runs}

    def line(name, key):
        st = best[key].stats
        return (f"{name:<26} {wall[key]:7.3f} s wall {cpu[key]:7.3f} s CPU  {st['forward_tokens']:>7,} fwd tokens "
                f"{st['forward_calls']:>5,} fwd calls {st['generate_calls']:>3} generate {st['judge_calls']:>3} judge "
                f"{st['vision_calls']:>3} vision")

    shown = os.path.relpath(path, ROOT) if Path(path).resolve().is_relative_to(ROOT) else path
    out = [f"model       {origin}: {shown} ({params / 1e6:.2f} M parameters)",
           f"budgets     {BUDGETS} new tokens per candidate; end of text suppressed; verdicts from log-probabilities (judge auto)",
           f"runs        best of {args.rounds} rounds x {args.repeat} runs per cell (interleaved), torch threads {args.threads}, "
           f"load average before: {load_before:.2f}", "",
           line("direct", "direct")]
    for n in beams:
        out.append(line(f"stage_beam N={n} efficient", ("efficient", n)))
        out.append(line(f"stage_beam N={n} naive", ("naive", n)))
    out.append("")
    for n in beams:
        e, nv = ("efficient", n), ("naive", n)
        out.append(f"N={n}: naive/efficient {wall[nv] / wall[e]:5.2f}x wall {cpu[nv] / cpu[e]:5.2f}x CPU "
                   f"{best[nv].stats['forward_tokens'] / best[e].stats['forward_tokens']:5.2f}x fwd tokens "
                   f"{best[nv].stats['forward_calls'] / best[e].stats['forward_calls']:5.2f}x fwd calls;  "
                   f"efficient/direct {wall[e] / wall['direct']:4.2f}x wall {cpu[e] / cpu['direct']:4.2f}x CPU")
    out.append("")

    def goal(label, key_a, key_b, op, target):
        w, c = wall[key_a] / wall[key_b], cpu[key_a] / cpu[key_b]
        ok = (lambda v: v >= target) if op == ">=" else (lambda v: v <= target)
        return (f"{label:<38} {w:5.2f}x wall [{'met' if ok(w) else 'NOT met'}]  {c:5.2f}x CPU "
                f"[{'met' if ok(c) else 'NOT met'}]   goal {op} {target}x")

    if 4 in beams:
        out.append(goal("N=4: naive time / efficient time", ("naive", 4), ("efficient", 4), ">=", 5))
        out.append(goal("N=4: efficient time / direct time", ("efficient", 4), "direct", "<=", 3))
        if 8 in beams:
            out.append(goal("N=4 -> 8: efficient time growth", ("efficient", 8), ("efficient", 4), "<=", 1.6))
            out.append(f"{'N=4 -> 8: naive time growth':<38} {wall[('naive', 8)] / wall[('naive', 4)]:5.2f}x wall "
                       f"{cpu[('naive', 8)] / cpu[('naive', 4)]:5.2f}x CPU (for reference)")
        if len(per_round) > 1:
            out.append("spread (CPU, best of each round): N=4 naive/efficient "
                       + ", ".join(f"{a:.2f}x" for a, _ in per_round) + ";  N=4 efficient/direct "
                       + ", ".join(f"{b:.2f}x" for _, b in per_round))
    report = "\n".join(out)
    print(report)
    eff.close(), naive.close()

    if args.readme:
        cmd = "python benchmarks/search.py --readme" + (f" --model {args.model}" if args.model else "") + \
            (f" --train-steps {args.train_steps}" if args.train_steps != 300 else "") + \
            (f" --repeat {args.repeat}" if args.repeat != 7 else "") + \
            (f" --rounds {args.rounds}" if args.rounds != 3 else "")
        body = (
            "Stage-level beam search (`pipeline.search`, strategy `stage_beam`) on the efficient core vs the "
            "public code's structure (`naive`: one `generate` per candidate re-encoding image and prefix, "
            "stop strings found by decoding the whole sequence every token, judge calls one by one) vs "
            "`direct`, N = 2, 4, 8, fixed per-stage budgets, in one run.\n\n"
            f"Command (from the repository root, venv active): `{cmd}`\n\n"
            f"Latest run ({date.today().isoformat()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
            f"{platform.machine()}):\n\n```\n{report}\n```\n\n"
            "Where the gain comes from: the image and prompt are encoded once per question (one vision pass, "
            "one prefill), a stage's N candidates advance together as one batch (one forward per token for "
            "all rows, so the number of sequential forwards does not grow with N; a row that has closed its "
            "tag leaves the batch), the winner alone is fed on to the next stage, stop strings are matched on "
            "a few trailing characters per row, the comparisons of a knockout round (and the reasoning "
            "pre-check of all candidates) are one batch over a judge prefix (question and answer so far) "
            "encoded once and extended from stage to stage, and verdicts are read from log-probabilities (no "
            "decoding; for a four-stage model from the candidates' decode-time log-probabilities, no forward). "
            "The naive path does 4N candidate `generate` calls plus N-1 judge calls per stage (and up to 2 "
            "pre-checks per reasoning comparison), each from scratch: at most the 4N + 6(N-1) sequential calls "
            "of the public code (`generate` + `judge` columns; fewer when a pre-check decides a comparison).\n\n"
            "Reading the figures: on a 0.3 M-parameter model a forward costs about the same 1-2 ms of "
            "dispatch whatever its length, so what the efficient path saves on a real model above all, "
            "re-running the vision tower over 4 x 1601 patches and re-encoding the whole prefix for every "
            "candidate and every comparison, is nearly free here; the speed-up over naive is then close to "
            "the ratio of forward calls (`fwd calls`), about N, plus the naive path's heavier calls. The naive "
            "mode reads the same log-probability verdicts (so that both choose the same text); the public "
            "code lets its judge write a sentence (sampled, up to 2048 tokens), so its real cost is higher "
            "than this naive column. The machine is shared: the spread line shows how much the N=4 ratios "
            "move between rounds of the same run. The model is the embedded tiny model after a few hundred "
            "CPU steps on the embedded corpus, so it writes the four tags and answers a judge prompt with a "
            "bare choice (the format only: its verdicts are no better than chance); with random weights "
            "(`--train-steps 0`) no candidate ever closes its tag and every verdict runs to its 4-token cap.\n"
        )
        write_readme_section("search", body)


if __name__ == "__main__":
    t0 = time.time()
    main()
    print(f"(benchmark wall time {time.time() - t0:.0f} s)", file=sys.stderr)
