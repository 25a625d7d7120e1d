"""Synthetic, labelled player lines for the reflection module's emotion classifier.

Five labels: neutral, sadness, distress (fear, anxiety, stress), anger, joy. The lines are
`emotion_templates.yaml` filled from its word lists (written for this project; nothing
is downloaded). The scripted scenarios in
training/evaluation/data/reflection_scenarios.yaml are written separately and measure the
classifier as part of the decision layer.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from training.data.templates import TemplateSet

TEMPLATES_FILE = Path(__file__).parent / "emotion_templates.yaml"


@cache
def templates() -> TemplateSet:
    return TemplateSet.load(TEMPLATES_FILE)


def build_dataset(n_per_class: int = 300, seed: int = 0) -> list[tuple[str, str]]:
    """(line, label) pairs, up to `n_per_class` distinct lines per label, shuffled."""
    return templates().build(n_per_class, seed)
