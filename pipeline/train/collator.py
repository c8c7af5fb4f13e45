"""From shard rows to a Mllama training batch: chat template, pixels, cross-attention mask, labels.

A row's `conversations` (`from`: human | gpt | system, `value`; the LLaVA `<image>` placeholder in a
human turn) become chat messages; the model's own chat template (through the processor) renders
them; the processor's tokenizer and image processor encode text and image, and the cross-attention
mask is built with the processor's own functions (`get_cross_attention_token_mask`,
`convert_sparse_cross_attention_mask_to_dense`): for a batch whose rows all have an image the
result is exactly what `processor(text=..., images=..., add_special_tokens=False)` returns (a test
checks this). The processor is not called as a whole because of text-only rows (below).

Labels are -100 everywhere except the assistant turns' content and the `<|eot_id|>` that ends each
of them: system and user turns, the `<|start_header_id|>assistant<|end_header_id|>\\n\\n` header,
the image token and the padding are masked. The assistant spans are found in the rendered text
(from the end of each assistant header to the end of the next `<|eot_id|>`) and mapped to tokens
through the tokenizer's character offsets, so any chat template that writes Llama 3 headers works
(the real Llama 3.2 Vision one and the tiny model's). Multi-turn conversations get one span per
assistant turn.

Text-only rows and ZeRO-3. Without `pixel_values` Mllama skips its vision tower, projector and
cross-attention layers. Under ZeRO-3 every rank must gather the same parameters in the same order
at every step (parameters are all-gathered module by module, and gradients reduce-scattered
parameter by parameter): a rank whose batch has no image would skip the vision tower's gathers
while the other ranks wait in them, and training hangs (ZeRO-2 desynchronises the same way in its
gradient buckets). So every row without an image gets a blank one-tile dummy image and no
`<|image|>` token, which makes its cross-attention mask all zeros: every batch carries
`pixel_values` and every rank runs the vision tower, the projector and every cross-attention layer
at every step. `pipeline.train.model.make_dummy_images_inert` then zeroes the cross-attention
output of such rows, so a text-only row computes exactly what Mllama's own text-only path computes
(the loss is bitwise equal; a test checks it) and the dummy's parameters get exact zero gradients.
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from pipeline.train.data import decode_image

IGNORE_INDEX = -100
ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system"}
IMAGE_PLACEHOLDER = "<image>"
ASSISTANT_HEADER = "<|start_header_id|>assistant<|end_header_id|>"
END_OF_TURN = "<|eot_id|>"


def to_messages(conversations: list[dict], has_image: bool) -> list[dict]:
    """Chat messages (content as a list of {"type": "image"} / {"type": "text"} items) from a row's
    turns. The image goes where the `<image>` placeholder was (at the start of that user turn), or
    at the start of the first user turn when no turn has the placeholder."""
    target = None
    if has_image:
        users = [i for i, t in enumerate(conversations) if ROLES.get(t["from"]) == "user"]
        marked = [i for i in users if IMAGE_PLACEHOLDER in t_value(conversations[i])]
        target = (marked or users or [None])[0]
    messages = []
    for i, turn in enumerate(conversations):
        role = ROLES.get(turn["from"])
        if role is None:
            raise ValueError(f"unknown speaker {turn['from']!r}")
        text = t_value(turn)
        content = []
        if role == "user":
            text = text.replace(IMAGE_PLACEHOLDER, "").strip()
            if i == target:
                content.append({"type": "image"})
        content.append({"type": "text", "text": text})
        messages.append({"role": role, "content": content})
    return messages


def t_value(turn: dict) -> str:
    return turn.get("value") or ""


def assistant_spans(text: str, header: str = ASSISTANT_HEADER, end: str = END_OF_TURN) -> list[tuple[int, int]]:
    """Character spans [start, stop) of each assistant turn's content and its end-of-turn token in
    a rendered conversation."""
    spans = []
    pos = 0
    while True:
        h = text.find(header, pos)
        if h < 0:
            return spans
        start = h + len(header)
        while start < len(text) and text[start] in " \t\r\n":
            start += 1
        e = text.find(end, start)
        stop = len(text) if e < 0 else e + len(end)
        spans.append((start, stop))
        pos = stop


def label_tokens(offsets: list[tuple[int, int]], spans: list[tuple[int, int]]) -> list[bool]:
    """Which tokens lie entirely inside one of the spans."""
    keep = []
    j = 0
    for s, e in offsets:
        while j < len(spans) and spans[j][1] <= s:
            j += 1
        keep.append(j < len(spans) and e > s and spans[j][0] <= s and e <= spans[j][1])
    return keep


class Collator:
    """`collator(rows) -> dict` of tensors: input_ids, attention_mask, labels, pixel_values,
    aspect_ratio_ids, aspect_ratio_mask, cross_attention_mask."""

    def __init__(self, processor, max_length: int = 4096, pad_to_multiple_of: int | None = None) -> None:
        self.processor = processor
        self.tokenizer = processor.tokenizer
        self.image_processor = processor.image_processor
        self.image_token = getattr(processor, "image_token", "<|image|>")
        self.image_token_id = self.tokenizer.convert_tokens_to_ids(self.image_token)
        self.max_length = max_length
        self.pad_to_multiple_of = pad_to_multiple_of
        pad = self.tokenizer.pad_token_id
        if pad is None:
            pad = self.tokenizer.convert_tokens_to_ids("<|finetune_right_pad_id|>")
        if pad is None or pad == self.tokenizer.unk_token_id:
            pad = self.tokenizer.eos_token_id
        self.pad_id = pad
        self.max_tiles = self.image_processor.max_image_tiles
        size = self.image_processor.size
        height = size["height"] if isinstance(size, dict) else size.height
        width = size["width"] if isinstance(size, dict) else size.width
        self.dummy_image = Image.new("RGB", (width, height), (0, 0, 0))  # one tile

    def render(self, row: dict, has_image: bool) -> str:
        messages = to_messages(row["conversations"], has_image)
        return self.processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=False)

    def encode(self, row: dict, image=None) -> dict:
        """One row: its rendered text, token ids and labels (unpadded lists)."""
        text = self.render(row, image is not None)
        enc = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True,
                             truncation=True, max_length=self.max_length)
        keep = label_tokens([tuple(o) for o in enc["offset_mapping"]], assistant_spans(text))
        ids = list(enc["input_ids"])
        labels = [t if k else IGNORE_INDEX for t, k in zip(ids, keep)]
        return {"text": text, "input_ids": ids, "labels": labels}

    def __call__(self, rows: list[dict]) -> dict[str, torch.Tensor]:
        from transformers.models.mllama.processing_mllama import (
            convert_sparse_cross_attention_mask_to_dense,
            get_cross_attention_token_mask,
        )

        images = [decode_image(r.get("image")) for r in rows]
        encoded = [self.encode(r, im) for r, im in zip(rows, images)]
        length = max(len(e["input_ids"]) for e in encoded)
        if self.pad_to_multiple_of:
            length = -(-length // self.pad_to_multiple_of) * self.pad_to_multiple_of
        n = len(rows)
        input_ids = torch.full((n, length), self.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((n, length), dtype=torch.long)
        labels = torch.full((n, length), IGNORE_INDEX, dtype=torch.long)
        for i, e in enumerate(encoded):
            k = len(e["input_ids"])
            input_ids[i, :k] = torch.tensor(e["input_ids"], dtype=torch.long)
            attention_mask[i, :k] = 1
            labels[i, :k] = torch.tensor(e["labels"], dtype=torch.long)
        # every row gets an image: its own, or the blank dummy (see the module docstring)
        pixels = self.image_processor([[im if im is not None else self.dummy_image] for im in images],
                                      max_image_tiles=self.max_tiles, return_tensors="pt")
        num_tiles = pixels.pop("num_tiles")
        sparse = [get_cross_attention_token_mask(ids.tolist(), self.image_token_id) for ids in input_ids]
        dense = convert_sparse_cross_attention_mask_to_dense(sparse, num_tiles, self.max_tiles, length)
        num_images = pixels["pixel_values"].shape[1]
        if dense.shape[2] < num_images:  # no row has an <|image|> token: all zeros
            dense = np.concatenate(
                [dense, np.zeros((n, length, num_images - dense.shape[2], self.max_tiles), dense.dtype)], axis=2)
        return {
            "input_ids": input_ids,
            "attention_mask": attention_mask,
            "labels": labels,
            "pixel_values": pixels["pixel_values"],
            "aspect_ratio_ids": pixels["aspect_ratio_ids"],
            "aspect_ratio_mask": pixels["aspect_ratio_mask"],
            "cross_attention_mask": torch.from_numpy(dense),
        }
