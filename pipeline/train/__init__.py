"""Fine-tuning Llama-3.2-Vision on the shards with DeepSpeed. The entry point is `python -m pipeline.train`
(pipeline/train/train.py documents the launch commands); data.py reads the shards, collator.py builds
batches and labels, model.py loads the model, ds_config.py fills the DeepSpeed configs in configs/,
report.py defines the metrics reporter interface."""
