"""The training data path without DeepSpeed: shards, order and position, labels, images."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from pipeline.demo.tiny_model import MARKER, write_tiny_model
from pipeline.train import ds_config
from pipeline.train.collator import IGNORE_INDEX, Collator, assistant_spans
from pipeline.train.data import ResumableBatchSampler, ShardDataset, decode_image
from pipeline.train.model import make_dummy_images_inert
from pipeline.train.report import JsonlReporter, load_reporter, read_metrics
from pipeline.train.train import DEFAULTS, parse_args
from tests.pipeline.train.synthetic import LAYOUT, image_row, text_row


def _runs(ids, labels):
    """The maximal runs of unmasked tokens."""
    runs, cur = [], []
    for t, l in zip(ids, labels):
        if l != IGNORE_INDEX:
            cur.append(t)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def _as_shard_row(row: dict) -> dict:
    image = None if row["image_bytes"] is None else {"bytes": row["image_bytes"], "path": row["image_path"]}
    return {"id": row["id"], "source": row["source"], "image": image, "conversations": row["conversations"]}


MULTI_TURN = [
    {"from": "system", "value": "You reason in four stages."},
    {"from": "human", "value": "<image>\nHow many red circles are there?"},
    {"from": "gpt", "value": "<SUMMARY>\nI will count.\n</SUMMARY>\n\n<CAPTION>\nTwo red circles.\n</CAPTION>\n\n"
                             "<REASONING>\nThere are 2.\n</REASONING>\n\n<CONCLUSION>\n2\n</CONCLUSION>"},
    {"from": "human", "value": "And how many blue ones?"},
    {"from": "gpt", "value": "<SUMMARY>\nCount again.\n</SUMMARY>\n\n<CAPTION>\nNo blue circle.\n</CAPTION>\n\n"
                             "<REASONING>\nNone is blue.\n</REASONING>\n\n<CONCLUSION>\n0\n</CONCLUSION>"},
]


def test_label_mask_of_a_multi_turn_sample_is_exactly_the_assistant_text(processor):
    collator = Collator(processor)
    row = {**_as_shard_row(image_row(0)), "conversations": MULTI_TURN}
    short = _as_shard_row(text_row(1))
    batch = collator([row, short])  # the short row is padded: padding must be masked too
    expected = [MULTI_TURN[2]["value"] + "<|eot_id|>", MULTI_TURN[4]["value"] + "<|eot_id|>"]
    ids, labels = batch["input_ids"][0].tolist(), batch["labels"][0].tolist()
    decoded = [processor.tokenizer.decode(r) for r in _runs(ids, labels)]
    assert decoded == expected
    # unmasked labels are the input ids themselves (Mllama shifts them)
    assert all(l in (IGNORE_INDEX, t) for t, l in zip(ids, labels))
    # the system and user turns, the headers and the image token are masked
    tok = processor.tokenizer
    image_id, header_id = tok.convert_tokens_to_ids("<|image|>"), tok.convert_tokens_to_ids("<|start_header_id|>")
    assert image_id in ids and header_id in ids
    assert all(l == IGNORE_INDEX for t, l in zip(ids, labels) if t in (image_id, header_id))
    # the text-only row: its one answer; its padding masked and not attended
    ids1, labels1, mask1 = (batch[k][1].tolist() for k in ("input_ids", "labels", "attention_mask"))
    assert [tok.decode(r) for r in _runs(ids1, labels1)] == [short["conversations"][1]["value"] + "<|eot_id|>"]
    n = sum(mask1)
    assert n < len(ids1) and all(l == IGNORE_INDEX for l in labels1[n:])
    assert all(t == tok.pad_token_id for t in ids1[n:])


def test_assistant_spans_skip_the_header_and_include_the_end_of_turn():
    text = ("<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\nhi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nA1<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nA2<|eot_id|>")
    assert [text[s:e] for s, e in assistant_spans(text)] == ["A1<|eot_id|>", "A2<|eot_id|>"]


def test_image_rows_are_encoded_exactly_as_the_processor_does(processor):
    collator = Collator(processor)
    rows = [_as_shard_row(image_row(i)) for i in range(3)]
    rows[1]["conversations"] = MULTI_TURN[1:]
    batch = collator(rows)
    texts = [collator.render(r, True) for r in rows]
    ref = processor(text=texts, images=[[decode_image(r["image"])] for r in rows], add_special_tokens=False,
                    padding=True, return_tensors="pt")
    for key in ("input_ids", "attention_mask", "pixel_values", "aspect_ratio_ids", "aspect_ratio_mask",
                "cross_attention_mask"):
        assert torch.equal(torch.as_tensor(ref[key]), batch[key]), key


def test_text_only_rows_get_an_inert_dummy_image(processor, tiny_model):
    from transformers import MllamaForConditionalGeneration

    collator = Collator(processor)
    text_batch = collator([_as_shard_row(text_row(i)) for i in (8, 9)])
    assert text_batch["pixel_values"].shape[:2] == (2, 1)  # every batch runs the vision tower
    assert int(text_batch["cross_attention_mask"].sum()) == 0
    text_only = {k: text_batch[k] for k in ("input_ids", "attention_mask", "labels")}

    model = MllamaForConditionalGeneration.from_pretrained(tiny_model)
    plain = model(**text_only).loss  # Mllama's own text-only path: no vision tower, no cross-attention
    assert model(**text_batch).loss.item() != plain.item()  # the dummy would leak in without the hooks
    make_dummy_images_inert(model)
    with_dummy = model(**text_batch).loss
    assert torch.equal(with_dummy, plain)
    with_dummy.backward()  # the vision tower takes part, with exact zero gradients
    grads = [p.grad for p in model.model.vision_model.parameters()]
    assert grads and all(g is not None and not g.any() for g in grads)
    # a mixed batch: the text row's loss is unchanged by its neighbour's image
    model.zero_grad()
    mixed = collator([_as_shard_row(text_row(8)), _as_shard_row(image_row(0))])
    logits = model(**mixed).logits[0]
    alone = model(**{k: text_only[k][:1] for k in ("input_ids", "attention_mask")}).logits[0]
    n = int(text_only["attention_mask"][0].sum())
    torch.testing.assert_close(logits[:n], alone[:n], rtol=1e-5, atol=1e-5)


def test_shard_dataset_reads_rows_lazily_by_row_group(shards):
    ds = ShardDataset(shards)
    assert len(ds) == len(LAYOUT) and ds.group_rows == [4, 4, 4, 4]
    assert [ds[i]["image"] is not None for i in range(len(ds))] == [k == "I" for k in LAYOUT]
    assert ds[5]["id"] == "synthetic/img-5" and ds[9]["id"] == "synthetic/txt-9"
    assert len(ds._cache) <= ds.cache_row_groups
    with pytest.raises(ValueError):
        ShardDataset(shards, split="validation")


def test_order_is_deterministic_and_a_position_resumes_it():
    groups = [5, 7, 3, 6]
    for world in (1, 2, 3):
        samplers = [ResumableBatchSampler(groups, 2, rank=r, world_size=world, seed=7, epochs=3) for r in range(world)]
        lengths = {len(list(s)) for s in samplers}
        assert len(lengths) == 1  # every rank the same number of micro-batches
        covered = {i for s in samplers for b in s.epoch_batches(1) for i in b}
        assert covered == set(range(sum(groups)))
    s = ResumableBatchSampler(groups, 3, rank=1, world_size=2, seed=7, epochs=3)
    full = list(s)
    for start in (0, 1, 4, len(full) - 1):
        assert list(ResumableBatchSampler(groups, 3, rank=1, world_size=2, seed=7, epochs=3, start=start)) == full[start:]
    again = ResumableBatchSampler(groups, 3, rank=1, world_size=2, seed=7, epochs=3)
    assert list(again) == full
    assert s.epoch_batches(0) != s.epoch_batches(1)  # a new order each epoch
    assert ResumableBatchSampler(groups, 3, seed=8).epoch_batches(0) != ResumableBatchSampler(groups, 3, seed=7).epoch_batches(0)
    assert np.array_equal(ResumableBatchSampler(groups, 3, shuffle=False).rank_rows(2), np.arange(21))


def test_deepspeed_configs_fill_every_auto_value():
    values = ds_config.auto_values(micro_batch=4, grad_accum=2, world_size=8, max_grad_norm=1.0, bf16=True, lr=1e-5,
                                   betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0, cpu=False, hidden_size=4096)
    for stage in (2, 3):
        shipped = ds_config.load(zero_stage=stage)
        filled = ds_config.fill(shipped, values)
        assert "auto" not in json.dumps(filled)
        assert filled["train_batch_size"] == 64 and filled["bf16"]["enabled"] is True
        assert ds_config.zero_stage(filled) == stage
    assert ds_config.load(zero_stage=3)["zero_optimization"]["stage3_gather_16bit_weights_on_model_save"] is True
    with pytest.raises(ValueError, match="optimizer.params.lr"):
        ds_config.fill({"optimizer": {"params": {"lr": "auto"}}}, {})
    f = ds_config.warmup_cosine(10, 2, 0.1)
    assert [round(f(s), 3) for s in (0, 1)] == [0.5, 1.0] and f(2) == 1.0 and abs(f(10) - 0.1) < 1e-9


def test_defaults_follow_the_paper():
    args = parse_args(["--data", "d", "--output-dir", "o"])
    assert (args.lr, args.epochs, args.per_device_batch_size, args.zero_stage) == (1e-5, 3, 4, 3)
    assert args.model == DEFAULTS["model"] == "meta-llama/Llama-3.2-11B-Vision-Instruct"
    assert not (args.freeze_vision or args.freeze_projector)  # full fine-tuning
    assert parse_args(["--data", "d", "--output-dir", "o", "--local_rank=1"]).local_rank == 1  # deepspeed launcher


class Recorder:
    events: list = []

    def open(self, config):
        self.events.append(("open", config))

    def log_metrics(self, step, metrics):
        self.events.append(("metrics", step))

    def log_checkpoint(self, step, path):
        self.events.append(("checkpoint", step))

    def close(self, final):
        self.events.append(("close", final))


def test_reporters_load_by_name(tmp_path, monkeypatch):
    assert isinstance(load_reporter(None), JsonlReporter)
    monkeypatch.setenv("LLAVACOT_TRAIN_REPORTER", f"{__name__}:Recorder")
    assert isinstance(load_reporter(None), Recorder)
    assert isinstance(load_reporter("pipeline.train.report:NullReporter"), object)
    with pytest.raises(ValueError):
        load_reporter("no-colon")
    r = JsonlReporter(stdout=False)
    r.open({"output_dir": str(tmp_path)})
    r.log_metrics(1, {"loss": 2.5, "lr": 1e-5})
    r.log_checkpoint(1, "/x")
    r.close({"loss": float("nan")})
    assert [m["loss"] for m in read_metrics(str(tmp_path))] == [2.5]
    assert read_metrics(str(tmp_path), "close")[0]["loss"] == "nan"


def test_tiny_model_is_deterministic_and_written_once(tiny_model, tmp_path):
    other = write_tiny_model(tmp_path / "again", seed=0)
    names = sorted(os.listdir(tiny_model))
    assert names == sorted(os.listdir(other))
    for name in names:
        with open(os.path.join(tiny_model, name), "rb") as a, open(os.path.join(other, name), "rb") as b:
            assert a.read() == b.read(), name
    stamp = os.stat(os.path.join(other, "model.safetensors")).st_mtime_ns
    assert write_tiny_model(other, seed=0) == other
    assert os.stat(os.path.join(other, "model.safetensors")).st_mtime_ns == stamp
    assert json.load(open(os.path.join(other, MARKER)))["seed"] == 0


def test_length_grouping_cuts_padding_and_keeps_the_order_resumable():
    rng = np.random.default_rng(3)
    groups = [40, 40, 40, 40, 17]
    lengths = rng.lognormal(6, 0.4, sum(groups)).astype(int)
    kw = dict(rank=1, world_size=2, seed=5, epochs=2, lengths=lengths, group_batches=16)
    s = ResumableBatchSampler(groups, 4, **kw)
    plain = ResumableBatchSampler(groups, 4, rank=1, world_size=2, seed=5, epochs=2)

    def useful(batches):
        return sum(lengths[b].sum() for b in batches) / sum(len(b) * lengths[b].max() for b in batches)

    batches = s.epoch_batches(0)
    assert len(batches) == len(plain.epoch_batches(0)) == s.batches_per_epoch
    assert sorted(i for b in batches for i in b) == sorted(i for b in plain.epoch_batches(0) for i in b)  # same rows
    assert useful(batches) > 0.9 and useful(batches) > useful(plain.epoch_batches(0)) + 0.15
    full = list(s)
    for start in (0, 3, 9, len(full) - 1):  # a position resumes it exactly
        assert list(ResumableBatchSampler(groups, 4, start=start, **kw)) == full[start:]
    assert s.epoch_batches(0) != s.epoch_batches(1)
    # every rank takes its windows' batches in the same length order
    other = ResumableBatchSampler(groups, 4, **{**kw, "rank": 0})
    rank_order = [np.argsort([-lengths[b].max() for b in w]).tolist()
                  for w in (other.epoch_batches(0)[:16], batches[:16])]
    assert rank_order[0] == rank_order[1]
    with pytest.raises(ValueError):
        ResumableBatchSampler(groups, 4, lengths=lengths[:-1], group_batches=8)


def test_row_lengths_count_tokens_of_every_turn(shards, processor):
    ds = ShardDataset(shards)
    lengths = ds.row_lengths(processor.tokenizer)
    tok = processor.tokenizer
    for i in (0, 9):
        expected = sum(len(tok(t["value"], add_special_tokens=False)["input_ids"]) for t in ds[i]["conversations"])
        assert lengths[i] == expected
    assert ds.row_lengths()[0] == sum(len(t["value"]) for t in ds[0]["conversations"])  # characters without a tokenizer


def test_the_demo_size_is_wider_and_has_no_dropout(tmp_path):
    from transformers import AutoConfig, AutoTokenizer

    demo = write_tiny_model(tmp_path / "demo", size="demo")
    config = AutoConfig.from_pretrained(demo)
    assert config.text_config.hidden_size == 128 and config.text_config.dropout == 0.0
    assert json.load(open(os.path.join(demo, MARKER)))["size"] == "demo"
    tok = AutoTokenizer.from_pretrained(demo)
    ids = tok("<SUMMARY>\nx\n</SUMMARY>", add_special_tokens=False)["input_ids"]
    assert tok.convert_ids_to_tokens([ids[0], ids[-1]]) == ["<SUMMARY>", "</SUMMARY>"]  # a tag is one token
    assert tok.decode(ids, skip_special_tokens=True) == "<SUMMARY>\nx\n</SUMMARY>"  # and is kept when decoding
    with pytest.raises(ValueError):
        write_tiny_model(tmp_path / "x", size="huge")
