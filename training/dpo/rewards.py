"""The reward on-policy DPO ranks sampled replies by: the evaluation's own judges, weighted.

One reply's reward is a sum of parts, each readable on its own in the samples file:

- flags: the runtime post-check's findings (invented or contradicted memory, breaking
  character, answering an out-of-world question, ignoring the chosen memory) and a
  generic or too-short line, each minus its weight;
- grounded: on a recall context, the reply carries the memory's own content words;
- support: on a support context, the support classifier reads the reply as comfort;
- persona: the voice classifier attributes the reply to its own persona;
- repetition: minus the share of repeated word trigrams;
- fluency: minus the reply's per-token negative log-likelihood under the frozen dense base
  model, given the same prompt (only differences between replies to one prompt matter,
  since pairs are drawn within a prompt).

These are the judges `training/evaluation/evaluate.py` reports, so a gain on its table is
in part a gain on what was optimised: its fluency and repetition columns, and reading the
replies, are the check that the judges were not gamed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from persona_adapters import Persona
from training.data.dialogues import DialogueSample, check_reply
from training.evaluation.quality import completion_nlls, grounded, repetition

FLAG_PENALTIES = {
    "invented_memory": 2.0,
    "contradicts_memory": 2.0,
    "breaks_character": 2.0,
    "answered_out_of_domain": 2.0,
    "ignored_recall": 1.0,
    "generic": 1.0,
    "too_long": 0.5,
}


@dataclass(frozen=True)
class RewardWeights:
    grounded: float = 2.0
    support: float = 1.0
    persona: float = 0.5
    repetition: float = 2.0
    fluency: float = 0.5
    flags: dict[str, float] = field(default_factory=lambda: dict(FLAG_PENALTIES))


@dataclass
class ScoredReply:
    reply: str
    reward: float
    parts: dict[str, float]
    flags: list[str]


class ReplyScorer:
    """Scores replies to one dialogue context with the post-check and the judges.

    Args:
        reflector: the runtime reflector (its post-check finds the flags).
        persona_judge: a `PersonaJudge` (which persona a reply sounds like).
        support_judge: a `SupportJudge` (whether a reply comforts).
        reference: an HFBackbone holding the frozen dense base model (fluency).
        weights: how much each part counts.
    """

    def __init__(self, reflector, persona_judge, support_judge, reference, weights: RewardWeights):
        self.reflector, self.persona_judge, self.support_judge = reflector, persona_judge, support_judge
        self.reference, self.weights = reference, weights

    def score(self, sample: DialogueSample, persona: Persona, replies: list[str]) -> list[ScoredReply]:
        w = self.weights
        voices = self.persona_judge.attribute(replies)
        supportive = self.support_judge.supportive(replies) if sample.strategy == "support" else None
        nlls = completion_nlls(self.reference, sample.messages(persona), replies)
        scored = []
        for i, reply in enumerate(replies):
            flags = check_reply(reply, sample, self.reflector, persona)
            parts = {"flags": -sum(w.flags.get(kind, 1.0) for kind in flags)}
            if sample.recall_fact is not None:
                parts["grounded"] = w.grounded * grounded(reply, sample.recall_fact["content"])
            if supportive is not None:
                parts["support"] = w.support * supportive[i]
            parts["persona"] = w.persona * (voices[i] == sample.persona_id)
            parts["repetition"] = -w.repetition * repetition(reply)
            total, n = nlls[i]
            parts["fluency"] = -w.fluency * (total / n if reply else 10.0)
            scored.append(ScoredReply(reply, round(sum(parts.values()), 4), parts, flags))
        return scored
