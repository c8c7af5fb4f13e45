import pytest


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """The embedded tiny Mllama (random weights), written with save_pretrained."""
    from pipeline.demo.tiny_model import write_tiny_model

    return write_tiny_model(tmp_path_factory.mktemp("tiny_mllama") / "model")


@pytest.fixture(scope="session")
def tiny(tiny_model_dir):
    from pipeline.search.core import load

    return load(tiny_model_dir)


@pytest.fixture(scope="session")
def image():
    from PIL import Image, ImageDraw

    im = Image.new("RGB", (90, 60), "white")
    d = ImageDraw.Draw(im)
    d.rectangle([10, 10, 30, 30], fill="red")
    d.ellipse([50, 20, 80, 50], fill="blue")
    return im


FOUR_STAGE_COLOURS = ("red", "blue", "green", "yellow")
FOUR_STAGE_SHAPES = ("cube", "sphere", "cylinder")


def four_stage_answer(k: int, colour: str, shape: str, conclusion: str | None = None) -> str:
    """A four-stage answer whose conclusion states the count its caption and reasoning found."""
    return (f"<SUMMARY>\nI will count the {colour} {shape}s.\n</SUMMARY>\n\n"
            f"<CAPTION>\nThe image shows {k} {colour} {shape}s.\n</CAPTION>\n\n"
            f"<REASONING>\nCounting them gives {k}.\n</REASONING>\n\n"
            f"<CONCLUSION>\n{k if conclusion is None else conclusion}\n</CONCLUSION>")


@pytest.fixture(scope="session")
def four_stage_model(tiny_model_dir):
    """The embedded tiny Mllama fine-tuned here on four-stage answers only (no judge prompt, no
    "1"/"2" reply ever): text-only questions -> summary, caption, reasoning, conclusion. 500 steps,
    seeded, one torch thread (the same run everywhere): about 30 s of CPU, once per test session. (At 300
    steps the caption test counted only 27 of 40 with the demo's newer tokenizer; at lr 4e-3 the tokenizer of
    the plainer offline teacher counted 23; at lr 2e-3 and 500 steps, 40 of 40 with every tokenizer tried.)"""
    import random

    import torch

    from pipeline.search.core import load

    model, processor = load(tiny_model_dir)
    tok = processor.tokenizer
    rng = random.Random(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    def chat(q):
        return processor.apply_chat_template([{"role": "user", "content": [{"type": "text", "text": q}]}],
                                             add_generation_prompt=True)

    eot = tok.convert_tokens_to_ids("<|eot_id|>")
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    model.train()
    b = 8
    try:
        for _ in range(500):
            seqs, labels = [], []
            for _ in range(b):
                k, colour, shape = rng.randint(0, 12), rng.choice(FOUR_STAGE_COLOURS), rng.choice(FOUR_STAGE_SHAPES)
                p_ids = tok(chat(f"How many {colour} {shape}s are there?"), add_special_tokens=False)["input_ids"]
                a_ids = tok(four_stage_answer(k, colour, shape), add_special_tokens=False)["input_ids"] + [eot]
                seqs.append(p_ids + a_ids)
                labels.append([-100] * len(p_ids) + a_ids)
            width = max(map(len, seqs))
            ids = torch.full((b, width), tok.pad_token_id)
            lab = torch.full((b, width), -100)
            att = torch.zeros((b, width), dtype=torch.long)
            for i, (sq, lb) in enumerate(zip(seqs, labels)):
                ids[i, :len(sq)], lab[i, :len(lb)], att[i, :len(sq)] = torch.tensor(sq), torch.tensor(lb), 1
            loss = model(input_ids=ids, attention_mask=att, labels=lab).loss
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            opt.zero_grad()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    return model, processor
