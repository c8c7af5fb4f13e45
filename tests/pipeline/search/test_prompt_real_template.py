"""Search and judge prompts with Llama 3.2 Vision's own chat template and its 560-pixel image
processor (built offline): exactly one <|begin_of_text|>, one <|image|>, four 560-pixel tiles."""
import pytest

torch = pytest.importorskip("torch")

from pipeline.search.base import ScoreItem  # noqa: E402
from pipeline.search.core import GenerationCore, NaiveCore  # noqa: E402

# Llama-3.2-11B-Vision-Instruct's chat template, restated from its tokenizer configuration (tools
# left out): <|begin_of_text|>; a system turn with the knowledge-cutoff and date lines only when no
# message holds an image; each message as a header, its content (an image item is <|image|>, a text
# item its text, untrimmed) and <|eot_id|>; then the assistant header when asked for.
LLAMA32_VISION_TEMPLATE = (
    "{{- bos_token }}"
    "{%- if not date_string is defined %}{%- set date_string = '26 Jul 2024' %}{%- endif %}"
    "{%- if messages[0]['role'] == 'system' %}"
    "{%- set system_message = messages[0]['content'] | trim %}{%- set messages = messages[1:] %}"
    "{%- else %}{%- set system_message = '' %}{%- endif %}"
    "{%- set ns = namespace(has_images=false) %}"
    "{%- for message in messages %}{%- if message['content'] is not string %}"
    "{%- for item in message['content'] %}{%- if item['type'] == 'image' %}{%- set ns.has_images = true %}{%- endif %}"
    "{%- endfor %}{%- endif %}{%- endfor %}"
    "{%- if ns.has_images and system_message != '' %}"
    "{{- raise_exception('Prompting with images is incompatible with system messages.') }}{%- endif %}"
    "{%- if not ns.has_images %}"
    "{{- '<|start_header_id|>system<|end_header_id|>\\n\\n' }}"
    "{{- 'Cutting Knowledge Date: December 2023\\n' }}{{- 'Today Date: ' + date_string + '\\n\\n' }}"
    "{{- system_message }}{{- '<|eot_id|>' }}"
    "{%- endif %}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
    "{%- if message['content'] is string %}{{- message['content'] }}"
    "{%- else %}{%- for item in message['content'] %}"
    "{%- if item['type'] == 'image' %}{{- '<|image|>' }}{%- elif item['type'] == 'text' %}{{- item['text'] }}{%- endif %}"
    "{%- endfor %}{%- endif %}"
    "{{- '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)


@pytest.fixture(scope="module")
def real_processor():
    """Mllama's processor as the 11B model ships it: 560-pixel tiles, at most four; the real
    template (the embedded tokenizer stands in for the 128k one: same special tokens)."""
    from transformers import MllamaProcessor

    from pipeline.demo.tiny_model import build_tokenizer

    try:
        from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil as ImageProcessor
    except ImportError:
        from transformers import MllamaImageProcessor as ImageProcessor
    tok = build_tokenizer(0)
    tok.chat_template = LLAMA32_VISION_TEMPLATE
    return MllamaProcessor(image_processor=ImageProcessor(size={"height": 560, "width": 560}, max_image_tiles=4,
                                                          do_resize=True), tokenizer=tok,
                           chat_template=LLAMA32_VISION_TEMPLATE)


def _core(cls, tiny, processor):
    model, _ = tiny
    return cls(model, processor)


def test_the_question_prompt_has_one_begin_of_text_and_one_image(tiny, real_processor):
    from PIL import Image

    core = _core(GenerationCore, tiny, real_processor)
    tok = real_processor.tokenizer
    bos, image_id = tok.convert_tokens_to_ids("<|begin_of_text|>"), tok.convert_tokens_to_ids("<|image|>")
    inputs = core.encode_prompt(Image.new("RGB", (1000, 700), "white"), "How many cubes?")
    ids = inputs["input_ids"][0].tolist()
    assert ids.count(bos) == 1 and ids[0] == bos and ids.count(image_id) == 1
    assert tuple(inputs["pixel_values"].shape[-3:]) == (3, 560, 560) and inputs["pixel_values"].shape[2] == 4
    assert int(inputs["aspect_ratio_mask"].sum()) == 4            # 1000 x 700: all four tiles in use
    text = tok.decode(ids)
    assert "Cutting Knowledge Date" not in text                    # no system turn with an image
    # a text-only question: the system turn the real template adds, still one <|begin_of_text|>
    ids = core.encode_prompt(None, "What is 2 + 2?")["input_ids"][0].tolist()
    assert ids.count(bos) == 1 and image_id not in ids and "Cutting Knowledge Date" in tok.decode(ids)


def test_judge_prompts_and_the_naive_path_have_one_begin_of_text(tiny, real_processor):
    from PIL import Image

    tok = real_processor.tokenizer
    bos = tok.convert_tokens_to_ids("<|begin_of_text|>")
    for cls in (GenerationCore, NaiveCore):
        core = _core(cls, tiny, real_processor)
        ids, at = core.score_ids(ScoreItem("Which is better?", "<SUMMARY>", "1"), image=True)
        assert ids.count(bos) == 1 and ids[0] == bos and at == len(ids) - len(core.tokens("1"))
    naive = _core(NaiveCore, tiny, real_processor)
    inputs = naive._inputs(Image.new("RGB", (600, 600), "white"), naive.chat_text("How many?"), [5, 6])
    assert inputs["input_ids"][0].tolist().count(bos) == 1
    assert inputs["cross_attention_mask"].shape[1] == inputs["input_ids"].shape[1]
