"""A drafter whose replies the base model itself finds likely: an opening in the persona's voice,
then the base model's own words.

The template drafter teaches memory use, refusal and voice, and with them its own shape, which the
base model finds unlikely (perplexity under the dense base 4.3 -> 12 after SFT on it,
`training/results/2026-11-30-on-policy-from-base.md`); the base model's own replies are fluent but
seldom say a memory out loud (3% of its samples). This drafter takes the part of a template that
does the strategy's work, its opening sentence, worded the way the reference model finds likeliest
among the persona's templates (and, for a recall, the guidance's own example), then lets the base
model continue greedily for at most one more sentence. The strategies in `own` (by default a plain
answer and support, which the base model already does in the guidance's words: its support reads
as comfort to the judge 92% of the time) take the base model's own greedy reply, cut to its
finished sentences, so SFT does not move them. A refusal whose continuation goes on to explain the
thing (the post-check, given the persona) keeps its opening alone. The post-check and the judges
still decide what is kept (build_dialogues step 3). With `voice_adapters`, a persona's own adapter
takes the base model's place for its samples (`build_dialogues --continue-with persona`), so the
rows stay in its voice apart from the opening.
"""

from __future__ import annotations

import re

from companion.reflection.guidance import memory_line, recall_line, second_person
from persona_adapters import Persona
from training.data.dialogues import DialogueSample, TemplateDrafter, check_reply, fill_voice, persona_voice
from training.evaluation.quality import completion_nlls

_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_STOP = re.compile(r"[.!?](?=\s|$)")  # where a sentence is finished


def opening(text: str, min_words: int = 5) -> str:
    """The text's first sentences, as many as make `min_words` words ("Smartphones?" alone says little)."""
    taken: list[str] = []
    for sentence in _SENTENCE_END.split(text.strip()):
        taken.append(sentence)
        if len(" ".join(taken).split()) >= min_words:
            break
    return " ".join(taken)


def finished(text: str) -> str:
    """`text` up to its last finished sentence (all of it when none is finished)."""
    text = " ".join(text.split())
    ends = [m.end() for m in _STOP.finditer(text)]
    return text[: ends[-1]] if ends else text


def first_sentence(text: str) -> str:
    """The first finished sentence of `text` ("" when none is finished)."""
    text = " ".join(text.split())
    match = _STOP.search(text)
    return text[: match.end()] if match else ""


class ContinuationDrafter:
    """Opening sentence chosen by the reference model's likelihood, then the backbone's continuation.

    Args:
        backbone: an HFBackbone holding the base model (it scores the openings and continues).
        bank: the dialogue bank (the persona voices' templates).
        max_new_tokens: the continuation's budget.
        repetition_penalty: for the greedy continuation (small models loop without one).
        own: strategies whose reply is the base model's own (greedy, `own_tokens`, as the
            evaluation generates); the others get an opening. () for the first version, where a
            plain answer took the persona's example lines and support a template opening.
        reflector: with it, a refusal's continuation that the post-check flags is dropped.
        voice_adapters: persona id -> the name of a loaded adapter that scores the openings and
            writes the continuation and the own replies for that persona (its bundled voice, say);
            a persona not in it gets the bare backbone.
    """

    def __init__(
        self,
        backbone,
        bank: dict,
        *,
        max_new_tokens: int = 32,
        repetition_penalty: float = 1.3,
        own: tuple[str, ...] = ("answer", "support"),
        own_tokens: int = 48,
        reflector=None,
        voice_adapters: dict[str, str] | None = None,
    ):
        self.backbone, self.bank = backbone, bank
        self.voice_adapters = dict(voice_adapters or {})
        self.max_new_tokens, self.repetition_penalty = max_new_tokens, repetition_penalty
        self.own, self.own_tokens, self.reflector = tuple(own), own_tokens, reflector
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

        messages = sample.messages(persona)
        adapter = self.voice_adapters.get(persona.id)
        if sample.strategy in self.own:
            params = GenerationParams(max_new_tokens=self.own_tokens, temperature=0)
            prompt = self.backbone.render_prompt(messages)
            return finished(self.backbone.generate_batch([prompt], adapters=[adapter], params=params)[0])
        candidates = self.openings(sample, persona)
        if not candidates:  # a plain answer: the persona's own example lines
            return self.template.draft(sample, persona)
        nlls = completion_nlls(self.backbone, messages, candidates, adapter=adapter)
        start = min(zip(candidates, nlls, strict=True), key=lambda c: c[1][0] / c[1][1])[0]
        params = GenerationParams(
            max_new_tokens=self.max_new_tokens, temperature=0, repetition_penalty=self.repetition_penalty
        )
        tail = self.backbone.generate_batch(
            [self.backbone.render_prompt(messages) + start + " "], adapters=[adapter], params=params
        )
        reply = " ".join(filter(None, [start, first_sentence(tail[0])]))
        if sample.strategy == "refuse" and self.reflector is not None and reply != start:
            if check_reply(reply, sample, self.reflector, persona):  # it went on to explain the thing
                return start
        return reply
