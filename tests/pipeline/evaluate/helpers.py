"""Hand-made VLMEvalKit rows for the scorer tests."""
from __future__ import annotations

import base64
import io

from PIL import Image

from pipeline.evaluate.tsv import Item, write_tsv
from pipeline.stages import render


def png_b64(colour=(200, 40, 40), size=(8, 8)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, colour).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def four_stage(conclusion: str) -> str:
    return render({"summary": "I will look at the picture.", "caption": "A picture.", "reasoning": "Thinking it over.",
                   "conclusion": conclusion})


def mc_item(index: str, answer: str, options: dict, question: str = "Which one?", **kw) -> Item:
    return Item(benchmark=kw.pop("benchmark", "MMStar"), index=str(index), question=question, answer=answer,
                options=dict(options), **kw)


class CountingJudge:
    """A fake LLM: replies from a function of the prompt, and counts its calls."""

    def __init__(self, reply, name="fake-judge"):
        self.reply = reply
        self.calls: list[str] = []
        self.name = name

    def __call__(self, prompt: str) -> str:
        self.calls.append(prompt)
        return self.reply(prompt) if callable(self.reply) else self.reply


def write(tmp_path, name, header, rows) -> str:
    p = str(tmp_path / f"{name}.tsv")
    write_tsv(p, header, rows)
    return p
