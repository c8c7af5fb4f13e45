"""A tiny, randomly initialised Llama-3.2-Vision (`MllamaForConditionalGeneration`) and its processor.

Written with `save_pretrained`, so training, export and search load it through the real
`from_pretrained` / `AutoProcessor.from_pretrained` path, exactly as they load
`meta-llama/Llama-3.2-11B-Vision-Instruct`. Nothing is downloaded:

- the tokenizer is a byte-level BPE trained here with `tokenizers` on a small synthetic corpus of
  questions and four-stage answers (some written by the offline teacher's own renderer, so the
  demo's training text is short in tokens), with the eight stage tags `<SUMMARY>` ... `</CONCLUSION>`
  as single (ordinary, not special) tokens, so a four-stage answer's skeleton is eight tokens the
  model learns quickly and decoding never drops them, and with the Llama 3 special tokens (`<|begin_of_text|>`, `<|start_header_id|>`, `<|end_header_id|>`, `<|eot_id|>`, `<|image|>`,
  `<|finetune_right_pad_id|>`, ...) and the Llama 3 pre-tokenizer split pattern;
- the chat template renders conversations the way Llama 3.2 Vision's does (header, content trimmed,
  `<|eot_id|>`; an image item becomes `<|image|>`);
- the image processor is `MllamaImageProcessor` with 56-pixel tiles (the real one uses 560), at most
  four tiles;
- the model: a 2-layer vision encoder (+1 global layer) on 14-pixel patches and a 4-layer text model
  whose layer 2 is a cross-attention layer; hidden size 64; attention dropout 0.1 (so a resumed
  training run continues exactly only if it restores the RNG state); about 0.3 M parameters.

Deterministic for a seed (same files for the same seed and version); written once: a folder that
already holds this version and seed is left alone (`write_tiny_model` returns at once).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

TINY_MODEL_VERSION = "3"  # 3: the offline teacher no longer copies the question into its answers
MARKER = "tiny_model.json"
IMAGE_SIZE = 56
VOCAB_SIZE = 1024  # an upper bound: the corpus is small, BPE stops at ~630 tokens

# Llama 3's special tokens (ids follow the base vocabulary, as in Llama 3 they follow its 128000).
SPECIAL_TOKENS = [
    "<|begin_of_text|>",
    "<|end_of_text|>",
    "<|reserved_special_token_0|>",
    "<|reserved_special_token_1|>",
    "<|finetune_right_pad_id|>",
    "<|step_id|>",
    "<|start_header_id|>",
    "<|end_header_id|>",
    "<|eom_id|>",
    "<|eot_id|>",
    "<|python_tag|>",
    "<|image|>",
]

STAGE_TAGS = [tag for stage in ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION") for tag in (f"<{stage}>", f"</{stage}>")]

# The Llama 3 pre-tokenizer pattern (tiktoken's cl100k style): newlines split off, a letter run may
# take one leading punctuation mark, numbers in groups of up to three digits.
LLAMA3_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

# Llama 3.2 Vision's chat template, restated: every message is a header, its content (trimmed) and
# <|eot_id|>; content is a string or a list of {"type": "image"} / {"type": "text", "text": ...}.
CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}"
    "{{- message['content'] | trim }}"
    "{%- else %}"
    "{%- for item in message['content'] %}"
    "{%- if item['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif item['type'] == 'text' %}{{- item['text'] | trim }}"
    "{%- endif %}"
    "{%- endfor %}"
    "{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

_COLOURS = ["red", "blue", "green", "yellow", "purple", "cyan", "brown", "gray"]
_SHAPES = ["cube", "sphere", "cylinder", "triangle", "circle", "square", "bar", "line"]
_WORDS = ("the image shows a chart with values for each year question asks how many objects are there "
          "count the number of items in the picture answer is option which of following best describes "
          "document text table title total sum difference angle degree triangle side length area "
          "reasoning step first then therefore so we conclude that final answer because").split()


def corpus(seed: int = 0, n: int = 1500) -> list[str]:
    """The tokenizer's training text: questions and four-stage answers in the dataset's format."""
    rng = random.Random(seed)
    lines = []
    for i in range(n):
        colour, shape = rng.choice(_COLOURS), rng.choice(_SHAPES)
        k = rng.randint(0, 12)
        words = " ".join(rng.choice(_WORDS) for _ in range(rng.randint(4, 14)))
        question = rng.choice([
            f"How many {colour} {shape}s are there?",
            f"What is the {rng.choice(['total', 'difference', 'area', 'value'])} shown in the {rng.choice(['chart', 'table', 'figure'])}?",
            f"Which option is correct? Options: A. {k} B. {k + 1} C. {k + 2}",
            f"Is the {colour} {shape} left of the {rng.choice(_COLOURS)} {rng.choice(_SHAPES)}?",
        ])
        answer = (f"<SUMMARY>\nI will {words}.\n</SUMMARY>\n\n<CAPTION>\nThe image shows {k} {colour} {shape}s.\n</CAPTION>"
                  f"\n\n<REASONING>\n{words.capitalize()}: {k} + {i % 7} = {k + i % 7}.\n</REASONING>\n\n"
                  f"<CONCLUSION>\n{rng.choice([str(k), 'Yes', 'No', 'A', 'B', 'C'])}\n</CONCLUSION>")
        lines += [question, answer]
    return lines + teacher_corpus(rng, n // 3)


def teacher_corpus(rng: random.Random, n: int) -> list[str]:
    """Questions and the answers the offline teacher (pipeline/annotate/backends.py) writes for them."""
    from types import SimpleNamespace

    from pipeline.annotate.backends import offline_stages
    from pipeline.stages import render

    sources = ["sharegpt4v", "chartqa", "aokvqa", "docvqa", "pisc", "clevr", "geoqa_plus", "ai2d", "scienceqa",
               "clevr_math"]
    lines = []
    for _ in range(n):
        colour, shape = rng.choice(_COLOURS), rng.choice(_SHAPES)
        options = [f"{rng.randint(0, 12)}" for _ in range(rng.randint(2, 4))] if rng.random() < 0.4 else []
        question = rng.choice([f"How many {colour} {shape}s are there?", f"What colour is the {shape}?",
                               f"What is the {rng.choice(['total', 'value', 'title'])} of the {shape}?"])
        answer = rng.choice("ABCD"[:len(options)]) if options else rng.choice([colour, shape, str(rng.randint(0, 12))])
        turn = SimpleNamespace(question=question, answer=answer, options=options, source=rng.choice(sources),
                               has_image=True, hints=[])
        lines += [question, render(offline_stages(turn))]
    return lines


def build_tokenizer(seed: int = 0):
    """A Llama-3-style fast tokenizer (byte-level BPE) trained on `corpus(seed)`."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(LLAMA3_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, trim_offsets=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(SPECIAL_TOKENS), min_frequency=2, show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=[],
    )
    tok.train_from_iterator(corpus(seed), trainer=trainer)
    tok.add_special_tokens(SPECIAL_TOKENS)  # ids after the base vocabulary, in this order
    tok.add_tokens(STAGE_TAGS)  # then the stage tags: matched whole, decoded as text
    # like Llama 3's tokenizer, add <|begin_of_text|> in front unless add_special_tokens=False (the
    # chat template already starts with it: whoever tokenises a rendered template must pass False)
    bos = "<|begin_of_text|>"
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A", pair=f"{bos} $A:0 {bos}:1 $B:1", special_tokens=[(bos, tok.token_to_id(bos))])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<|begin_of_text|>",
        eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>",
        model_max_length=4096,
        padding_side="right",
        chat_template=CHAT_TEMPLATE,
        clean_up_tokenization_spaces=False,
    )


def build_processor(seed: int = 0):
    from transformers import MllamaProcessor
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    tokenizer = build_tokenizer(seed)
    image_processor = MllamaImageProcessorPil(size={"height": IMAGE_SIZE, "width": IMAGE_SIZE}, max_image_tiles=4)
    return MllamaProcessor(image_processor=image_processor, tokenizer=tokenizer, chat_template=CHAT_TEMPLATE)


# Text-model sizes. "test": the smallest that exercises every code path (the test suite's model).
# "demo": what the main command fine-tunes, wide enough to learn to answer in four stages from the
# embedded sample's ~120 rows in a minute of CPU (at "test" size greedy answers to the demo's
# benchmark questions stay malformed however long it trains), and without dropout.
SIZES = {
    "test": {"hidden_size": 64, "intermediate_size": 128, "dropout": 0.1},
    "demo": {"hidden_size": 128, "intermediate_size": 256, "dropout": 0.0},
}


def build_model(tokenizer, seed: int = 0, size: str = "test"):
    import torch
    from transformers import GenerationConfig, MllamaConfig, MllamaForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    vision = dict(
        hidden_size=32, attention_heads=2, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
        intermediate_layers_indices=[0], vision_output_dim=64, image_size=IMAGE_SIZE, patch_size=14,
        max_num_tiles=4,
    )
    text = dict(
        vocab_size=len(tokenizer), hidden_size=SIZES[size]["hidden_size"], num_hidden_layers=4,
        cross_attention_layers=[2], num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=SIZES[size]["intermediate_size"], max_position_embeddings=4096,
        bos_token_id=ids["<|begin_of_text|>"], eos_token_id=[ids["<|end_of_text|>"], ids["<|eot_id|>"]],
        pad_token_id=ids["<|finetune_right_pad_id|>"], tie_word_embeddings=False,
        # attention dropout in training ("test"): makes exact-resume tests depend on the RNG state
        dropout=SIZES[size]["dropout"],
    )
    config = MllamaConfig(vision_config=vision, text_config=text, image_token_index=ids["<|image|>"])
    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(config)
    with torch.no_grad():
        # The gates of the cross-attention layers start at 0 (a freshly added adapter); a trained
        # Llama 3.2 Vision has them open. Open them so the image path matters in this model too.
        for name, p in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                p.fill_(0.5)
    model.generation_config = GenerationConfig(
        bos_token_id=text["bos_token_id"], eos_token_id=text["eos_token_id"], pad_token_id=text["pad_token_id"],
        do_sample=False, max_new_tokens=32,
    )
    return model


def write_tiny_model(out_dir: str | os.PathLike, seed: int = 0, force: bool = False, size: str = "test") -> str:
    """Write the tiny model and its processor into `out_dir` (a local folder); return its path.

    Skipped when `out_dir` already holds this version for this seed. Written into a temporary
    sibling folder and renamed into place, so a reader never sees half a model."""
    out = Path(out_dir)
    if size not in SIZES:
        raise ValueError(f"tiny model size {size!r}: expected one of {', '.join(SIZES)}")
    marker = {"tiny_model_version": TINY_MODEL_VERSION, "seed": seed, **({"size": size} if size != "test" else {})}
    if not force and (out / MARKER).is_file():
        try:
            if json.loads((out / MARKER).read_text()) == marker:
                return str(out)
        except (OSError, ValueError):
            pass
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{out.name}-", dir=out.parent))
    try:
        processor = build_processor(seed)
        model = build_model(processor.tokenizer, seed, size)
        model.save_pretrained(tmp)
        processor.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(marker) + "\n")
        if out.exists():
            shutil.rmtree(out)
        os.chmod(tmp, 0o755)
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return str(out)


if __name__ == "__main__":  # python -m pipeline.demo.tiny_model OUT_DIR [SEED [SIZE]]
    import sys

    print(write_tiny_model(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0,
                           size=sys.argv[3] if len(sys.argv) > 3 else "test"))
