"""The learned strategy gates: does this line call for support, is it out of the persona's world,
is it an attempt to break the role, does it ask what the character remembers?

One small perceptron over the line's sentence embedding and the persona's setting (who, where,
when, and what the character knows), so that an out-of-world request is judged against the
setting as a whole (a medieval innkeeper knows no software, stock markets or television; a
present-day barista does) instead of a word list. Trained on `training/data/reflection_bank.yaml`
and the emotion examples by `python -m training.classifiers.reflection`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from companion.reflection.small_mlp import RETRAIN, SmallMLP
from memory.errors import SummarizerWeightsError
from memory.protocols import Embedder
from persona_adapters import Persona

WEIGHTS_PATH = Path(__file__).resolve().parents[1] / "weights" / "strategy.npz"
GATES = ("support", "out_of_world", "injection", "memory_question")


def setting_text(description: str, knowledge_domain: str) -> str:
    """The text a setting is embedded from."""
    return f"{description.strip()} Knows about: {knowledge_domain.strip()}."


def persona_setting(persona: Persona) -> str:
    return setting_text(persona.description, persona.knowledge_domain)


def strategy_features(lines: np.ndarray, setting: np.ndarray) -> np.ndarray:
    """(n, dim) lines, (dim,) setting -> (n, 3*dim): [line, setting, line*setting]."""
    tiled = np.broadcast_to(setting[None, :], lines.shape)
    return np.concatenate([lines, tiled, lines * tiled], axis=1).astype(np.float32)


@dataclass(frozen=True)
class GateReading:
    """Each gate's probability for one line."""

    support: float
    out_of_world: float
    injection: float
    memory_question: float


class StrategyModel:
    """Reads the four gates' probabilities for a player's line and a persona.

    Args:
        embedder: the embedder the weights were trained with (all-MiniLM-L6-v2).
    """

    def __init__(self, embedder: Embedder, *, weights_path: Path | None = None):
        self.embedder = embedder
        self.mlp = SmallMLP(
            weights_path or WEIGHTS_PATH, in_features=3 * embedder.dimension, retrain_hint=RETRAIN
        )
        if tuple(self.mlp.outputs) != GATES:
            raise SummarizerWeightsError(
                f"strategy weights have outputs {self.mlp.outputs}, expected {list(GATES)}; retrain with `{RETRAIN}`."
            )

    def read(self, text: str, persona: Persona) -> GateReading:
        line, setting = np.asarray(self.embedder.embed([text, persona_setting(persona)]), dtype=np.float32)
        probs = self.mlp.probabilities(strategy_features(line[None, :], setting))[0]
        return GateReading(*(float(p) for p in probs))
