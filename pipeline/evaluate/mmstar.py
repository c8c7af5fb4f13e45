"""MMStar: 1,500 multiple-choice questions that need the image, 250 in each of six categories
(coarse perception, fine-grained perception, instance reasoning, logical reasoning, math, science &
technology). Score: accuracy over all items, with the per-category accuracies beside it."""
from __future__ import annotations

from pipeline.evaluate import register
from pipeline.evaluate.base import MultipleChoice


@register
class MMStar(MultipleChoice):
    name = "MMStar"
    description = "multiple choice, accuracy; breakdown over its six categories"
