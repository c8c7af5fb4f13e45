"""The trainer's FLOP count is what torch's FlopCounterMode counts on a forward + backward."""
from __future__ import annotations

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from pipeline.train.collator import Collator
from pipeline.train.data import ShardDataset
from pipeline.train.flops import micro_batch_flops, peak_tflops
from pipeline.train.model import freeze, make_dummy_images_inert


@pytest.mark.parametrize("rows,frozen", [((0, 9, 10), ()), ((1, 2), ("vision",)), ((3, 11, 12, 13), ("projector",)),
                                         ((4, 5), ("vision", "projector"))])
def test_formula_equals_flop_counter_mode(tiny_model, processor, shards, rows, frozen):
    from transformers import MllamaForConditionalGeneration

    # eager attention: on the CPU, FlopCounterMode counts scaled_dot_product_attention only through
    # its math path; on a GPU it counts the flash / efficient kernels with the same formula
    model = MllamaForConditionalGeneration.from_pretrained(tiny_model, attn_implementation="eager")
    make_dummy_images_inert(model)
    freeze(model, list(frozen))
    ds = ShardDataset(shards)
    batch = Collator(processor)([ds[i] for i in rows])
    with FlopCounterMode(display=False) as counter:
        model(**batch).loss.backward()
    n, s = batch["input_ids"].shape
    assert micro_batch_flops(model.config, n, s, batch["pixel_values"].shape[1], frozen) == counter.get_total_flops()


def test_peak_table_by_device_name():
    assert peak_tflops("NVIDIA H200") == 989.0 and peak_tflops("NVIDIA H100 PCIe") == 756.0
    assert peak_tflops("NVIDIA A100-SXM4-80GB") == 312.0 and peak_tflops("cpu") is None
    assert peak_tflops("NVIDIA H200", override=500) == 500.0
