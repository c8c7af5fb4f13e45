"""The fused linear + cross-entropy computes Mllama's own loss and gradients, with the same masking."""
from __future__ import annotations

import pytest
import torch

from pipeline.train import loss
from pipeline.train.collator import IGNORE_INDEX, Collator
from pipeline.train.data import ShardDataset


def test_chunked_loss_equals_plain_cross_entropy_with_ignored_positions():
    g = torch.Generator().manual_seed(0)
    hidden = torch.randn(700, 48, generator=g, dtype=torch.float64, requires_grad=True)
    weight = (torch.randn(900, 48, generator=g, dtype=torch.float64) * 0.1).requires_grad_()
    targets = torch.randint(0, 900, (700,), generator=g)
    targets[::3] = IGNORE_INDEX
    got = loss.chunked_linear_cross_entropy(hidden, weight, targets, chunk=128)  # several chunks, a ragged last one
    (got * 2.5).backward()  # a scale after the loss reaches the gradients
    gh, gw = hidden.grad.clone(), weight.grad.clone()
    hidden.grad = weight.grad = None
    ref = loss.plain_linear_cross_entropy(hidden, weight, targets)
    (ref * 2.5).backward()
    torch.testing.assert_close(got, ref)
    torch.testing.assert_close(gh, hidden.grad)
    torch.testing.assert_close(gw, weight.grad)
    assert gh[::3].abs().sum() == 0  # ignored positions get no gradient


def test_a_micro_batch_without_labels_gives_zero_not_nan():
    hidden = torch.randn(5, 8, requires_grad=True)
    weight = torch.randn(11, 8, requires_grad=True)
    out = loss.chunked_linear_cross_entropy(hidden, weight, torch.full((5,), IGNORE_INDEX))
    out.backward()
    assert out.item() == 0.0 and not hidden.grad.any() and not weight.grad.any()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_installed_fused_loss_matches_mllamas_own_loss_and_gradients(tiny_model, processor, shards, dtype):
    from transformers import MllamaForConditionalGeneration

    from pipeline.train.model import make_dummy_images_inert

    ds = ShardDataset(shards)
    batch = Collator(processor)([ds[i] for i in (0, 9, 10, 14)])  # images, text-only rows, padding
    batch["pixel_values"] = batch["pixel_values"].to(dtype)
    models = []
    for fused in (False, True):
        model = MllamaForConditionalGeneration.from_pretrained(tiny_model, dtype=dtype).eval()  # eval: no dropout
        make_dummy_images_inert(model)
        if fused:
            loss.install(model, lambda h, w, t: loss.chunked_linear_cross_entropy(h, w, t, chunk=16))
        out = model(**batch)
        out.loss.backward()
        models.append((model, out))
    (plain, plain_out), (fused, fused_out) = models
    assert fused_out.logits is None and plain_out.logits is not None
    tol = {"rtol": 1e-5, "atol": 1e-6} if dtype == torch.float32 else {"rtol": 2e-2, "atol": 1e-2}
    torch.testing.assert_close(fused_out.loss, plain_out.loss, **tol)
    for (name, a), b in zip(plain.named_parameters(), fused.parameters()):
        torch.testing.assert_close(b.grad.float(), a.grad.float(), **tol, msg=name)
    # without labels the model is unchanged: logits as before
    with torch.no_grad():
        inputs = {k: v for k, v in batch.items() if k != "labels"}
        torch.testing.assert_close(fused(**inputs).logits, plain(**inputs).logits)


def test_auto_resolves_to_the_torch_implementation_without_a_gpu():
    assert loss.resolve("auto", torch.device("cpu"), torch.float32)[0] == "chunked"
    assert loss.resolve("off", torch.device("cpu"), torch.float32) == ("off", None)
    with pytest.raises(SystemExit, match="CUDA"):
        loss.resolve("liger", torch.device("cpu"), torch.float32)
