"""A tiny randomly initialised Mllama (vision + text) with a locally trained tokenizer, saved with
`save_pretrained`, for the search tests and the search benchmark. Nothing is downloaded.

Used until / unless `pipeline.demo.tiny_model` provides one (see `tiny_model_dir`)."""
from __future__ import annotations

import json
from pathlib import Path

LLAMA3_SPECIALS = [
    "<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>",
    "<|eot_id|>", "<|image|>", "<|finetune_right_pad_id|>", "<|python_tag|>",
]

CHAT_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for content in message['content'] %}"
    "{%- if content['type'] == 'image' %}{{- '<|image|>' }}"
    "{%- elif content['type'] == 'text' %}{{- content['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)

_CORPUS = [
    "<SUMMARY> I will count the objects and answer. </SUMMARY>",
    "<CAPTION> The image shows three red cubes and a blue sphere on a grey floor. </CAPTION>",
    "<REASONING> There are 3 cubes. 3 + 1 = 4 objects in total. So the answer is 4. </REASONING>",
    "<CONCLUSION> 4 </CONCLUSION>",
    "Now you act as a judge. Which response is better? Answer 1 or 2. correct incorrect",
    "The chart shows values for 2019, 2020 and 2021. The bar for 2021 is the tallest.",
    "Question: How many objects are there? Options: A. 3 B. 4 C. 5 D. 6",
]


def build_tiny_mllama(path: str | Path, seed: int = 0) -> Path:
    """Write a tiny MllamaForConditionalGeneration + MllamaProcessor to `path` and return it."""
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import (MllamaConfig, MllamaForConditionalGeneration, MllamaImageProcessor,
                              MllamaProcessor, PreTrainedTokenizerFast)

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=LLAMA3_SPECIALS,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(_CORPUS * 20, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>",
        pad_token="<|finetune_right_pad_id|>", clean_up_tokenization_spaces=False,
    )
    fast.chat_template = CHAT_TEMPLATE
    image_processor = MllamaImageProcessor(size={"height": 28, "width": 28}, max_image_tiles=4)
    processor = MllamaProcessor(image_processor=image_processor, tokenizer=fast, chat_template=CHAT_TEMPLATE)

    vocab = len(fast)
    ids = {t: fast.convert_tokens_to_ids(t) for t in LLAMA3_SPECIALS}
    config = MllamaConfig(
        vision_config=dict(hidden_size=32, num_hidden_layers=2, num_global_layers=1, attention_heads=2,
                           intermediate_size=64, image_size=28, patch_size=14, max_num_tiles=4,
                           intermediate_layers_indices=[0], vision_output_dim=64),
        text_config=dict(vocab_size=vocab, hidden_size=64, num_hidden_layers=3, num_attention_heads=4,
                         num_key_value_heads=2, intermediate_size=128, cross_attention_layers=[1],
                         max_position_embeddings=4096, bos_token_id=ids["<|begin_of_text|>"],
                         eos_token_id=ids["<|eot_id|>"], pad_token_id=ids["<|finetune_right_pad_id|>"]),
        image_token_index=ids["<|image|>"],
    )
    torch.manual_seed(seed)
    model = MllamaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = ids["<|eot_id|>"]
    model.generation_config.pad_token_id = ids["<|finetune_right_pad_id|>"]
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
