"""annotations[src]: the teacher's four-stage answer for every assistant turn of the subsample."""

import dagster as dg
import pyarrow.parquet as pq

from assets.metadata import annotations_markdown, counts_table, preview_table
from assets.partitions import source_partitions
from assets.sources import subsample
from pipeline.annotate.backends import TeacherUnusable
from pipeline.annotate.images import SourceImages
from pipeline.annotate.partition import ANNOTATE_VERSION, POLICIES, annotate_partition, progress_line
from pipeline.annotate.pricing import UnknownPrice
from pipeline.annotate.prompts import PROMPT_VERSION
from resources import DataStore
from resources.teacher import Teacher

TEACHER_POOL = "teacher_api"
ANNOTATIONS_KEY = dg.AssetKey("annotations")


class AnnotateConfig(dg.Config):
    policy: str = "missing"  # missing | retry_failed (the re-annotation schedule)


def build_annotations_asset(teacher_model_label: str):
    """The asset's code_version names the prompt version and the teacher model, so changing
    either marks every partition as changed code in the UI."""

    @dg.asset(
        name="annotations",
        partitions_def=source_partitions,
        deps=[subsample],
        group_name="annotation",
        code_version=f"annotate-{ANNOTATE_VERSION}-prompt-{PROMPT_VERSION}-{teacher_model_label}",
        pool=TEACHER_POOL,
        kinds={"openai", "parquet"},
        description="Teacher four-stage answers (generate -> parse -> rules/judge -> retry) for every "
        "assistant turn; every request cached, so nothing is paid twice.",
    )
    def annotations(
        context: dg.AssetExecutionContext, config: AnnotateConfig, data_store: DataStore, teacher: Teacher
    ) -> dg.MaterializeResult:
        if config.policy not in POLICIES:
            raise dg.Failure(f"policy must be one of {POLICIES}")
        source = context.partition_key
        source_root = data_store.raw(source)
        out = data_store.step("annotations", source)
        root = data_store.root()
        folder = teacher.cache_folder(root.base if root.is_local else None)

        images = SourceImages(source_root, source)

        def on_progress(stats, total):
            context.log.info(f"{source}: " + progress_line(stats, total))

        try:
            annotator, cleanup = teacher.build(folder, images.load, on_progress=on_progress, run_id=context.run_id,
                                               log=context.log.info, prepare_image=images.prepare,
                                               open_image=images.open)
            try:
                s = annotate_partition(
                    source, data_store.step("subsample", source).path("samples.parquet"), source_root, out,
                    annotator, policy=config.policy, log=context.log.info,
                )
            finally:
                cleanup()
        except (UnknownPrice, TeacherUnusable) as exc:  # nothing more can be done by retrying: say what to fix
            raise dg.Failure(description=f"{source}: {exc}", allow_retries=False) from None
        with out.fs.open(s.annotations_path, "rb") as f:
            preview = pq.read_table(f).slice(0, 5).to_pylist()
        st = s.stats
        return dg.MaterializeResult(
            data_version=dg.DataVersion(s.content_hash),
            metadata={
                "dagster/row_count": s.turns,
                "turns": s.turns,
                "turns_by_status": counts_table(s.by_status, "status", "turns"),
                **{f"status/{k}": v for k, v in s.by_status.items()},
                "kept_from_previous_run": s.kept,
                "sent_this_run": s.sent,
                "why_sent": dg.MetadataValue.json(s.stale),
                "calls_made": st["calls"],
                "cache_hits": st["cache_hits"],
                "faults_retried": dg.MetadataValue.json(st["faults"]),
                "pauses_for_rate_limits": st["pauses"],
                "input_tokens": st["input_tokens"],
                "cached_input_tokens": st["cached_tokens"],
                "output_tokens": st["output_tokens"],
                "batch_api": s.batch,
                "cost_usd_this_run": float(st["spent_usd"]),
                "usd_per_accepted_turn_this_run": dg.MetadataValue.float(s.usd_per_accepted_turn)
                if s.usd_per_accepted_turn is not None else dg.MetadataValue.null(),
                "cost_usd_partition": float(s.partition_usd),
                "usd_per_accepted_turn": dg.MetadataValue.float(s.partition_usd_per_accepted_turn)
                if s.partition_usd_per_accepted_turn is not None else dg.MetadataValue.null(),
                "estimated_cost_usd": float(s.estimate["usd"]),
                "estimate": dg.MetadataValue.json(s.estimate),
                "teacher_model": s.teacher_model,
                "prompt_version": s.prompt_version,
                "policy": config.policy,
                "path": dg.MetadataValue.path(s.annotations_path),
                "preview": preview_table(preview, ["sample_id", "turn_index", "status", "conclusion", "judge_verdict", "reason"]),
                "annotations_in_full": annotations_markdown(preview),
            },
        )

    return annotations
