"""Where the benchmark files are and how the search runs (device, precision, questions in flight)."""
import os

import dagster as dg
from pydantic import Field

from pipeline.search import DEFAULT_BUDGETS


def _env(name: str, default: str) -> str:
    return os.environ.get(name, "") or default


class EvaluationSettings(dg.ConfigurableResource):
    benchmark_dir: str = Field(default="", description="Folder of VLMEvalKit TSVs (<name>.tsv); default "
                               "<data root>/benchmarks, where the demo writes its tiny ones.")
    write_demo_benchmarks: bool = Field(default=False, description="Write the tiny demo TSVs when absent.")
    device: str = Field(default_factory=lambda: _env("LLAVACOT_EVAL_DEVICE", "auto"),
                        description="auto (cuda when present, else cpu), cuda, cuda:1, cpu. "
                        "Environment: LLAVACOT_EVAL_DEVICE.")
    dtype: str = Field(default_factory=lambda: _env("LLAVACOT_EVAL_DTYPE", "auto"),
                       description="auto (bfloat16 on CUDA, the checkpoint's own elsewhere), bfloat16, float16, "
                       "float32. Environment: LLAVACOT_EVAL_DTYPE.")
    batch_size: int = Field(default_factory=lambda: int(_env("LLAVACOT_EVAL_BATCH", "8")),
                            description="Benchmark questions in flight at once (their model calls batched). "
                            "Environment: LLAVACOT_EVAL_BATCH.")
    judge: str = Field(default="auto", description="How the search's judge reads verdicts: auto, label, likelihood.")
    greedy: bool = Field(default=False, description="Greedy decoding instead of temperature 0.6 / top-p 0.9.")
    seed: int = 0
    scope: str = Field(default="conclusion", description="conclusion (default) or full: what is scored.")
    stage_budgets: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_BUDGETS),
                                          description="Max new tokens per stage.")
    sentence_tokens: int = Field(default=64, description="sentence_beam: max new tokens of one sentence.")

    def benchmark_file(self, data_store, name: str) -> str:
        from pipeline.storage import Root

        root = Root(self.benchmark_dir) if self.benchmark_dir else data_store.root().child("benchmarks")
        if not root.exists(f"{name}.tsv"):
            if self.write_demo_benchmarks:
                from pipeline.demo.benchmarks import write_benchmarks

                write_benchmarks(root, seed=0)
            else:
                raise dg.Failure(description=f"benchmark file {name}.tsv not found in {root.uri}; put the "
                                 "VLMEvalKit TSV there or set evaluation.benchmark_dir")
        return root.path(f"{name}.tsv")
