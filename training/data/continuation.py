"""A drafter whose replies the base model itself finds likely: an opening in the persona's voice,
then the base model's own words.

The template drafter teaches memory use, refusal and voice, and with them its own shape, which the
base model finds unlikely (perplexity under the dense base 4.3 -> 12 after SFT on it,
`training/results/2026-11-30-on-policy-from-base.md`); the base model's own replies are fluent but
seldom say a memory out loud (3% of its samples). This drafter takes the part of a template that
does the strategy's work, its opening sentence, worded the way the reference model finds likeliest
among the persona's templates (and, for a recall, the guidance's own example), then lets the base
model continue greedily for at most one more sentence. The post-check and the judges still decide
what is kept (build_dialogues step 3).
"""

from __future__ import annotations

import re

from companion.reflection.guidance import memory_line, recall_line, second_person
from persona_adapters import Persona
from training.data.dialogues import DialogueSample, TemplateDrafter, fill_voice, persona_voice
from training.evaluation.quality import completion_nlls

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_FINISHED = re.compile(r"^.*?[.!?](?=\s|$)", re.DOTALL)


def opening(text: str, min_words: int = 5) -> str:
    """The text's first sentences, as many as make `min_words` words ("Smartphones?" alone says little)."""
    taken: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        taken.append(sentence)
        if len(" ".join(taken).split()) >= min_words:
            break
    return " ".join(taken)


def first_sentence(text: str) -> str:
    """The first finished sentence of `text` ("" when none is finished)."""
    match = _FINISHED.match(" ".join(text.split()))
    return match.group(0) if match else ""


class ContinuationDrafter:
    """Opening sentence chosen by the reference model's likelihood, then the backbone's continuation.

    Args:
        backbone: an HFBackbone holding the base model (it scores the openings and continues).
        bank: the dialogue bank (the persona voices' templates).
        max_new_tokens: the continuation's budget.
        repetition_penalty: for the greedy continuation (small models loop without one).
    """

    def __init__(self, backbone, bank: dict, *, max_new_tokens: int = 32, repetition_penalty: float = 1.3):
        self.backbone, self.bank = backbone, bank
        self.max_new_tokens, self.repetition_penalty = max_new_tokens, repetition_penalty
        self.template = TemplateDrafter(bank)

    def openings(self, sample: DialogueSample, persona: Persona) -> list[str]:
        """The candidate openings for this sample's strategy (none for a plain answer)."""
        voice = persona_voice(self.bank, persona.id)
        if sample.strategy == "recall":
            content, advice = sample.recall_fact["content"], sample.recall_fact["advice"]
            filled = [
                fill_voice(t, voice, you_fact=second_person(content), advice=advice) for t in voice["recall"]
            ]
            filled += [
                recall_line(content),
                memory_line(content),
            ]  # the guidance's and the pipeline's own words
        elif sample.strategy == "support":
            filled = [fill_voice(t, voice) for t in voice["support"]]
        elif sample.strategy == "refuse":
            filled = [fill_voice(t, voice, topic=sample.refuse_topic) for t in voice["refuse"]]
        else:
            return []
        return list(dict.fromkeys(opening(text) for text in filled))

    def draft(self, sample: DialogueSample, persona: Persona) -> str:
        from companion.backbone import GenerationParams

        candidates = self.openings(sample, persona)
        if not candidates:  # a plain answer: the persona's own example lines
            return self.template.draft(sample, persona)
        messages = sample.messages(persona)
        nlls = completion_nlls(self.backbone, messages, candidates)
        start = min(zip(candidates, nlls, strict=True), key=lambda c: c[1][0] / c[1][1])[0]
        params = GenerationParams(
            max_new_tokens=self.max_new_tokens, temperature=0, repetition_penalty=self.repetition_penalty
        )
        tail = self.backbone.generate_batch(
            [self.backbone.render_prompt(messages) + start + " "], params=params
        )
        return " ".join(filter(None, [start, first_sentence(tail[0])]))
