"""python -m pipeline.search --model PATH --image IMG --question "..." [--strategy stage_beam --beam 4]

Prints the four stages of the answer, as the public demo does, and the cost of the search."""
from __future__ import annotations

import argparse
import json
import sys

from ..stages import STAGES
from .base import DEFAULT_BUDGETS, SearchConfig
from .registry import run, strategies


def _at_least_one(value: str) -> int:
    n = int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be 1 or more, not {n}")
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.search", description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="Hugging Face model folder or hub id (Mllama)")
    ap.add_argument("--image", required=True)
    ap.add_argument("--question", required=True)
    ap.add_argument("--strategy", default="stage_beam", choices=sorted(strategies()))
    ap.add_argument("--beam", type=_at_least_one, default=4, help="N: candidates per step (1 or more)")
    ap.add_argument("--judge-model", help="a separate judge model (default: the same model)")
    ap.add_argument("--greedy", action="store_true", help="greedy decoding instead of T=0.6, top-p 0.9")
    ap.add_argument("--temperature", type=float, default=0.6)
    ap.add_argument("--top-p", type=float, default=0.9)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mode", default="efficient", choices=["efficient", "naive"],
                    help="naive: the public code's cost structure (for comparison only)")
    ap.add_argument("--device", default="auto", help="auto (cuda when present), cuda, cpu")
    ap.add_argument("--dtype", default="auto", help="auto (bfloat16 on CUDA), bfloat16, float32")
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--judge", default="auto", choices=["auto", "label", "likelihood"],
                    help="how verdicts are read from the judging model's probabilities")
    for s in STAGES:
        ap.add_argument(f"--{s}-tokens", type=int, default=DEFAULT_BUDGETS[s], help=f"token budget of the {s}")
    ap.add_argument("--cutoff", type=float, default=0.5, help="retrace: score below which to go back")
    ap.add_argument("--max-retraces", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print the result as JSON")
    a = ap.parse_args(argv)

    from . import quiet_warnings
    from .core import make_core

    quiet_warnings()
    kw = dict(temperature=a.temperature, top_p=a.top_p, top_k=a.top_k, greedy=a.greedy, seed=a.seed)
    core = make_core(a.model, mode=a.mode, device=a.device, dtype=a.dtype, **kw)
    judge = make_core(a.judge_model, mode=a.mode, device=a.device, dtype=a.dtype, **kw) if a.judge_model else None
    config = SearchConfig(beam=a.beam, budgets={s: getattr(a, f"{s}_tokens") for s in STAGES},
                          greedy=a.greedy, seed=a.seed, cutoff=a.cutoff, max_retraces=a.max_retraces, judge=a.judge)
    res = run(a.strategy, core, a.image, a.question, config, judge=judge)
    if a.json:
        print(json.dumps({"strategy": res.strategy, "text": res.text, "stages": res.stages,
                          "problem": res.problem, "stats": res.stats, "seconds": round(res.seconds, 3)},
                         ensure_ascii=False, indent=2))
        return 0
    for s in STAGES:
        print(f"{s.upper()}:\n{res.stages.get(s, '(missing)')}\n")
    if res.problem:
        print(f"(not a well-formed four-stage answer: {res.problem}; raw text below)\n{res.text}\n")
    st = res.stats
    print(f"[{res.strategy}, beam {a.beam}, {a.mode}] {res.seconds:.2f} s, {st['forward_tokens']} forward tokens, "
          f"{st['forward_calls']} forward calls, {st['generate_calls']} generate calls, {st['judge_calls']} judge calls",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
