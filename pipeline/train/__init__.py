"""Fine-tuning Llama-3.2-Vision on the shards with DeepSpeed. The entry point is `python -m pipeline.train`
(pipeline/train/train.py documents the launch commands); data.py reads the shards and orders them
(length-grouped batches), collator.py builds batches and labels, model.py loads the model and sets
its memory and speed options, loss.py is the fused linear + cross-entropy, loop.py runs the steps
and reports speed (flops.py: MFU; profiling.py: GPU-busy fraction), plan.py says whether a run fits
(`python -m pipeline.train.plan`), ds_config.py fills the DeepSpeed configs in configs/, report.py
defines the metrics reporter interface."""
