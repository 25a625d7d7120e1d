"""Synthetic, labelled player utterances for the fast summarizer: the eight event types and "none".

The lines are `summarizer_templates.yaml` filled from its word lists (written for this
project; nothing is downloaded). `training/evaluation/data/memory_dev_set.jsonl` shares no
sentence with them: it measures how the classifier generalises, not how it memorises.
"""

from __future__ import annotations

from functools import cache
from pathlib import Path

from training.data.templates import TemplateSet

TEMPLATES_FILE = Path(__file__).parent / "summarizer_templates.yaml"


@cache
def templates() -> TemplateSet:
    return TemplateSet.load(TEMPLATES_FILE)


def build_dataset(n_per_class: int = 300, seed: int = 0) -> list[tuple[str, str]]:
    """(utterance, label) pairs, up to `n_per_class` distinct ones per label, shuffled."""
    return templates().build(n_per_class, seed)
