"""FLOPs of a training micro-batch of Mllama, from the model's widths and the batch's shapes, and
the peak FLOP/s of the accelerator: the trainer's model FLOPs utilisation (MFU).

Not 6 x parameters x tokens: about 60 % of Mllama's work is the vision tower, which encodes every
image as `max_num_tiles` tiles of (image_size / patch_size)^2 + 1 patches (padded to a multiple of
8) whatever the text length, and its attention is quadratic in 4 x 1,608 tokens. The count below
follows the model's own matrix products, the ones `torch.utils.flop_counter.FlopCounterMode`
counts (linear layers, convolution, scaled-dot-product attention, each at its real shape), so it
equals FlopCounterMode on a forward + backward of the same batch (tests/pipeline/train/test_flops.py
checks this exactly on the tiny model; benchmarks/train_gpu.py prints both at 11B widths), and
costs nothing per step. Backward is twice the forward, except where no gradient is needed: the
patch embedding's input (pixels) and, when parts are frozen, their weights and what lies before
them. Activation-checkpointing recomputation is not counted (model FLOPs, not hardware FLOPs).
"""
from __future__ import annotations

# Dense bf16 tensor-core peak of training GPUs, TFLOP/s, from the vendors' data sheets (without
# sparsity). Matched as a substring of torch.cuda.get_device_name(); the longest match wins.
PEAK_BF16_TFLOPS = {
    "B200": 2250.0,
    "H200": 989.0,
    "H100": 989.0,
    "H100 PCIe": 756.0,
    "H800": 989.0,
    "A100": 312.0,
    "A800": 312.0,
    "L40S": 362.0,
    "L4": 121.0,
    "A10": 125.0,
}


def peak_tflops(device_name: str, override: float | None = None) -> float | None:
    """The bf16 peak for a device name (e.g. "NVIDIA H200"), or `override` when given."""
    if override:
        return float(override)
    hits = [k for k in PEAK_BF16_TFLOPS if k in device_name]
    return PEAK_BF16_TFLOPS[max(hits, key=len)] if hits else None


def _widths(config):
    v, t = config.vision_config, config.text_config
    patches = (v.image_size // v.patch_size) ** 2 + 1          # + the class token
    padded = patches + (8 - patches % 8) % 8                    # the vision model pads to a multiple of 8
    heads = t.num_attention_heads
    head_dim = t.hidden_size // heads
    return v, t, patches, padded, t.num_key_value_heads * head_dim


def image_forward_flops(config) -> dict[str, int]:
    """Forward FLOPs of one image through the vision tower and the projector, by part."""
    v, t, patches, padded, _ = _widths(config)
    tiles, d, inter = v.max_num_tiles, v.hidden_size, v.intermediate_size
    tokens = tiles * padded                                     # the local and global encoders' sequence
    layer = 2 * tokens * d * (4 * d + 2 * inter) + 4 * tokens * tokens * d
    return {
        "patch_embedding": 2 * tiles * (patches - 1) * d * v.num_channels * v.patch_size ** 2,
        "encoder": (v.num_hidden_layers + v.num_global_layers) * layer,
        "projector": 2 * tiles * patches * v.vision_output_dim * t.hidden_size,
        # the tile mask is built as an outer product (a matmul of the padding vector with itself)
        "attention_mask": 2 * tokens * tokens,
    }


def row_forward_flops(config, seq_len: int, images: int = 1) -> dict[str, int]:
    """Forward FLOPs of one text row of `seq_len` tokens (attending to `images` images) through the
    language model and its head, by part."""
    v, t, patches, _, kv = _widths(config)
    d, inter, s = t.hidden_size, t.intermediate_size, seq_len
    vision_tokens = images * v.max_num_tiles * patches
    cross = len(t.cross_attention_layers)
    self_layers = t.num_hidden_layers - cross
    mlp = 6 * s * d * inter
    return {
        "self_attention_layers": self_layers * (2 * s * d * (2 * d + 2 * kv) + 4 * s * s * d + mlp),
        "cross_attention_queries": cross * (4 * s * d * d + 4 * s * vision_tokens * d + mlp),
        "cross_attention_keys": cross * 4 * vision_tokens * d * kv,
        "head": 2 * s * d * t.vocab_size,
    }


def micro_batch_flops(config, rows: int, seq_len: int, images_per_row: int = 1,
                      frozen: tuple[str, ...] = ()) -> int:
    """FLOPs of forward + backward of a micro-batch of `rows` rows padded to `seq_len` tokens,
    each with `images_per_row` images (the collator gives every row one), with the parts in
    `frozen` ("vision", "projector") not trained."""
    image = image_forward_flops(config)
    row = row_forward_flops(config, seq_len, images_per_row)
    vision_trained = "vision" not in frozen
    projector_trained = "projector" not in frozen
    # backward multiplier: 2 = gradients of input and weight, 1 = one of them, 0 = none
    encoder_bwd = 2 if vision_trained else 0
    projector_bwd = (1 if vision_trained else 0) + (1 if projector_trained else 0)
    keys_bwd = 2 if (vision_trained or projector_trained) else 1
    per_image = (image["attention_mask"] + image["patch_embedding"] * (2 if vision_trained else 1)
                 + image["encoder"] * (1 + encoder_bwd)
                 + image["projector"] * (1 + projector_bwd))
    per_row = (3 * (row["self_attention_layers"] + row["cross_attention_queries"] + row["head"])
               + row["cross_attention_keys"] * (1 + keys_bwd))
    return rows * (per_row + images_per_row * per_image)
