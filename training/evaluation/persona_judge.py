"""Whose voice is this reply in? A small classifier over the bundled personas' own lines.

Trained, each time the evaluation runs (seconds), on the NPC lines of each persona's card
(first message, example dialogues) and its voice templates in the dialogue bank, embedded
with MiniLM; a softmax layer on top (training/classifiers/linear.py). It is measured on
`persona_heldout.yaml`, lines never trained on, so the evaluation can print how far the
judge itself can be trusted beside the share of replies it attributes to the right persona.
"""

from __future__ import annotations

import re

import numpy as np
import yaml

from persona_adapters import Persona
from training.classifiers.linear import train_softmax
from training.common import EVAL_DATA
from training.data.dialogues import SINGULAR_TOPIC
from training.evaluation.quality import rate

_SLOT = re.compile(r"\{[a-z_]+\}")


def persona_lines(persona: Persona, voice: dict | None) -> list[str]:
    """The persona's own lines: card first message, example NPC lines, voice templates (slots cut)."""
    lines = [persona.first_message] if persona.first_message else []
    lines += [
        line.text for dialogue in persona.example_dialogues for line in dialogue if line.role != "player"
    ]
    for kind, templates in (voice or {}).items():
        if kind != "address":
            address = voice.get("address", "")
            lines += [
                _SLOT.sub("", fill_agreement(t.replace("{address}", address))).strip(" ,.-?")
                for t in templates
            ]
    return [line for line in lines if len(line.split()) >= 3]


def fill_agreement(template: str) -> str:
    """A refusal template's agreement slots as they read for a singular topic (the topic slot
    itself is cut, as before these slots existed, so the judge's lines stay the same)."""
    for slot, word in SINGULAR_TOPIC.items():
        template = template.replace("{" + slot + "}", word)
    return template


class PersonaJudge:
    """Attributes a reply to one of `personas` by its voice.

    Args:
        embedder: sentence embeddings (MiniLM).
        personas: the personas to tell apart (at least two).
        bank: the dialogue bank (training/data/dialogue_bank.yaml), for the voice templates.
    """

    def __init__(self, embedder, personas: list[Persona], bank: dict):
        self.embedder = embedder
        self.ids = [p.id for p in personas]
        rows = [(line, p.id) for p in personas for line in persona_lines(p, bank.get("voices", {}).get(p.id))]
        x = np.asarray(embedder.embed([t for t, _ in rows]), dtype=np.float32)
        y = np.asarray([self.ids.index(label) for _, label in rows], dtype=np.int64)
        self.weight, self.bias = train_softmax(x, y, len(self.ids), l2=1e-3, epochs=200, seed=0)
        self.n_training_lines = len(rows)

    def attribute(self, replies: list[str]) -> list[str]:
        if not replies:
            return []
        x = np.asarray(self.embedder.embed(replies), dtype=np.float32)
        return [self.ids[i] for i in (x @ self.weight.T + self.bias).argmax(axis=1)]

    def heldout_accuracy(self, path=EVAL_DATA / "persona_heldout.yaml") -> dict:
        """The judge's own accuracy on held-out persona lines, with a Wilson 95% interval."""
        heldout = yaml.safe_load(path.read_text(encoding="utf-8"))
        pairs = [(pair["npc"], pid) for pid, pairs in heldout.items() if pid in self.ids for pair in pairs]
        right = sum(
            got == want for got, (_, want) in zip(self.attribute([t for t, _ in pairs]), pairs, strict=True)
        )
        return rate(right, len(pairs))
