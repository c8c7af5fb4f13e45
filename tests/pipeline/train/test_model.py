"""Model-side training settings: activation checkpointing of the vision layers, and why padded
image tiles are still encoded."""
from __future__ import annotations

import torch

from pipeline.train.collator import Collator
from pipeline.train.data import ShardDataset
from pipeline.train.model import checkpoint_vision_layers, make_dummy_images_inert, vision_layers
from pipeline.train.plan import saved_bytes


def _model(tiny_model):
    from transformers import MllamaForConditionalGeneration

    model = MllamaForConditionalGeneration.from_pretrained(tiny_model, attn_implementation="sdpa")
    model.eval()  # no dropout: the two runs below must compute the same thing
    make_dummy_images_inert(model)
    return model


def test_vision_checkpointing_keeps_loss_and_gradients_and_saves_memory(tiny_model, processor, shards):
    ds = ShardDataset(shards)
    batch = Collator(processor)([ds[i] for i in (0, 1, 10)])
    results = []
    for checkpointing in (False, True):
        model = _model(tiny_model)
        if checkpointing:
            assert checkpoint_vision_layers(model) == len(vision_layers(model)) == 3
        model.train()  # checkpointing acts in training mode only ...
        for m in model.modules():  # ... and dropout must stay off for the comparison
            for attr in ("dropout", "attention_dropout"):
                if isinstance(getattr(m, attr, None), float):
                    setattr(m, attr, 0.0)
        holder = {}
        kept = saved_bytes(lambda: holder.setdefault("loss", model(**batch).loss))
        holder["loss"].backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if "vision_model" in n and p.grad is not None}
        results.append((holder["loss"].detach(), grads, kept))
    (loss0, grads0, kept0), (loss1, grads1, kept1) = results
    torch.testing.assert_close(loss1, loss0)
    assert grads0.keys() == grads1.keys() and grads0
    for name in grads0:
        torch.testing.assert_close(grads1[name], grads0[name], msg=name)
    assert kept1 < kept0  # the vision layers' activations are recomputed in backward, not kept


def test_real_tiles_see_padded_tiles_in_mllamas_vision_encoder(tiny_model, processor, shards):
    """Why the trainer encodes all max_num_tiles tiles of an image: Mllama's tile mask only masks
    padding *against padding* (an outer product of the padding vector), so a real tile's patches
    attend to the padded tiles' tokens, which the checkpoint was trained with. Encoding only the
    real tiles would change the model's outputs. If transformers ever masks padded tiles as keys,
    this test fails, and skipping them becomes exact (and worth doing: the vision tower is ~60 % of
    the FLOPs at 11B)."""
    model = _model(tiny_model)
    ds = ShardDataset(shards)
    batch = Collator(processor)([ds[0]])  # an 84 x 56 image: fewer tiles than max_num_tiles
    real = batch["aspect_ratio_mask"][0, 0].bool()
    assert 0 < int(real.sum()) < real.numel()
    vision = model.model.vision_model
    kwargs = {k: batch[k] for k in ("aspect_ratio_ids", "aspect_ratio_mask")}
    with torch.no_grad():
        before = vision(pixel_values=batch["pixel_values"], **kwargs).last_hidden_state
        changed = batch["pixel_values"].clone()
        changed[0, 0, ~real] = torch.randn_like(changed[0, 0, ~real])  # only the padded tiles differ
        after = vision(pixel_values=changed, **kwargs).last_hidden_state
    assert not torch.allclose(before[0, 0, real], after[0, 0, real])
