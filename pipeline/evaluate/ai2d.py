"""AI2D_TEST: science diagrams with four-option questions. Score: accuracy over items."""
from __future__ import annotations

from pipeline.evaluate import register
from pipeline.evaluate.base import MultipleChoice


@register
class AI2DTest(MultipleChoice):
    name = "AI2D_TEST"
    description = "multiple choice, accuracy"
