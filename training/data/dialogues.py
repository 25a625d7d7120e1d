"""Memory-grounded dialogue data in four checked steps (DESIGN §8).

1. `sample_dialogues`: a persona, a player profile (facts across the eight event types,
   told in an earlier session) and what the next reply must do: recall a fact, support a
   hurting player, refuse an out-of-world question in character, or answer plainly.
2. A `Drafter` writes the NPC's reply to the prompt the pipeline itself would build
   (persona + history + reflection guidance): `OpenAICompatibleDrafter` asks any
   OpenAI-compatible endpoint (vLLM, llama.cpp server, a hosted API), `BackboneDrafter`
   a local backbone; `TemplateDrafter` is the offline fallback, from the persona voices
   in `data/dialogue_bank.yaml`.
3. `check_reply`: the runtime post-check (companion.reflection: breaks character,
   invented or contradicted memory, ignored recall, answered out of domain, too long)
   plus a generic-reply check. Failing dialogues are dropped.
4. `sft_row` / `dpo_row`: TRL's conversational prompt-completion and preference formats.
   The DPO "rejected" reply is a realistic failure (`FAILURE_KINDS`), kept only if the
   checks catch it.
"""

from __future__ import annotations

import json
import logging
import random
import re
import urllib.request
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import yaml

from companion.prompting import build_messages
from companion.reflection import Decision, Reflector
from companion.reflection.decision import RecallChoice
from companion.reflection.guidance import guidance, second_person
from memory.events import EventDraft, EventType, MemoryEvent
from persona_adapters import Persona

log = logging.getLogger(__name__)
BANK = Path(__file__).parent / "dialogue_bank.yaml"
STRATEGIES = ("recall", "support", "refuse", "answer")
FAILURE_KINDS = ("ignored_memory", "invented_memory", "breaks_character", "generic", "out_of_domain")
GENERIC = re.compile(
    r"^(that's interesting|i see|okay|ok|sure|hmm)\b|how can i (help|assist) you|is there anything else|"
    r"can you tell me more\??$",
    re.IGNORECASE,
)


def load_bank(path: Path = BANK) -> dict:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@dataclass
class DialogueSample:
    """Step 1's output, and the drafted reply once step 2 ran."""

    id: str
    persona_id: str
    strategy: str
    told: list[dict]  # facts told in the earlier session (bank entries)
    trigger: str  # the player's line the reply answers
    recall_fact: dict | None = None
    refuse_topic: str | None = None
    history: list[dict] = field(default_factory=list)  # {"role": "player"|"npc", "text"}
    reply: str = ""

    def events(self) -> list[MemoryEvent]:
        """What the store holds about this player: the told facts as events."""
        return [
            MemoryEvent.from_draft(
                EventDraft(type=EventType(f["type"]), content=f["content"], importance=7),
                player_id=f"sample-{self.id}",
                npc_id=self.persona_id,
                id=f"{self.id}-{f['id']}",
            )
            for f in self.told
        ]

    def decision(self) -> Decision:
        """The reflection decision this sample stands for."""
        recall = []
        if self.recall_fact is not None:
            f = self.recall_fact
            recall = [
                RecallChoice(
                    event_id=f"{self.id}-{f['id']}",
                    type=f["type"],
                    content=f["content"],
                    value=0.8,
                    reason="sample",
                )
            ]
        support = self.strategy == "support"
        return Decision(
            strategy=self.strategy,
            emotion="sadness" if support else "neutral",
            emotion_confidence=0.9,
            tone="gentle and warm" if support else "friendly",
            recall=recall,
            refuse_topic=self.refuse_topic,
        )

    def messages(self, persona: Persona) -> list[dict[str, str]]:
        """The prompt exactly as the turn pipeline builds it."""
        chat = [
            {"role": "user" if t["role"] == "player" else "assistant", "content": t["text"]}
            for t in self.history
        ]
        return build_messages(persona, chat, self.trigger, guidance=guidance(self.decision(), persona))

    def player_lines(self) -> list[str]:
        return [t["text"] for t in self.history if t["role"] == "player"] + [self.trigger]

    def to_json(self) -> dict:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


# ---- step 1: sample ----------------------------------------------------------------------


def sample_dialogues(
    personas: list[Persona], bank: dict, *, n: int, seed: int, facts: list[dict] | None = None
) -> list[DialogueSample]:
    """n samples, strategies in turn, facts drawn from `facts` (default: the whole bank)."""
    rng = random.Random(seed)
    facts = facts if facts is not None else bank["facts"]
    samples = []
    for i in range(n):
        persona = personas[i % len(personas)]
        strategy = STRATEGIES[(i // len(personas)) % len(STRATEGIES)]
        voice = persona_voice(bank, persona.id)
        told = rng.sample(facts, k=min(len(facts), rng.randint(1, 3)))
        sample = DialogueSample(
            id=f"{seed}-{i}", persona_id=persona.id, strategy=strategy, told=told, trigger=""
        )
        if strategy == "recall":
            sample.recall_fact = told[0]
            sample.trigger = rng.choice(told[0]["triggers"])
        elif strategy == "support":
            sample.trigger = rng.choice(bank["sad_lines"])
        elif strategy == "refuse":
            sample.refuse_topic = rng.choice(persona.must_refuse or ["smartphones"])
            sample.trigger = rng.choice(
                [
                    f"What do you think about {sample.refuse_topic}?",
                    f"Can you explain {sample.refuse_topic} to me?",
                ]
            )
        else:
            pairs = _example_pairs(persona)
            sample.trigger = rng.choice(pairs)[0] if pairs else "What's new around here?"
        for fact in told:  # the earlier session: the player tells, the NPC acknowledges
            sample.history += [
                {"role": "player", "text": fact["said"]},
                {"role": "npc", "text": fill_voice(rng.choice(voice["acknowledge"]), voice)},
            ]
        samples.append(sample)
    return samples


def _example_pairs(persona: Persona) -> list[tuple[str, str]]:
    pairs = []
    for dialogue in persona.example_dialogues:
        for a, b in zip(dialogue, dialogue[1:], strict=False):
            if a.role == "player" and b.role != "player":
                pairs.append((a.text, b.text))
    return pairs


def persona_voice(bank: dict, persona_id: str) -> dict:
    """The persona's voice templates in the bank (Mira's for a persona the bank has none for)."""
    return bank["voices"].get(persona_id, bank["voices"]["mira"])


def fill_voice(template: str, voice: dict, **values: str) -> str:
    """`template` in the persona's voice; with a `topic`, `{is}` and `{it}` agree with it."""
    if "topic" in values:
        values = topic_agreement(values["topic"]) | values
    text = template.format(address=voice["address"], **values)
    return text[0].upper() + text[1:]


SINGULAR_TOPIC = {"is": "is", "it": "it"}  # a refusal template's agreement slots, filled
PLURAL_TOPIC = {"is": "are", "it": "them"}


def topic_agreement(topic: str) -> dict[str, str]:
    """The verb and pronoun a refused topic takes: "smartphones are / them", "the internet is / it"."""
    last = topic.split()[-1].lower()
    plural = " and " in topic or (last.endswith("s") and not last.endswith(("ss", "us", "is")))
    return PLURAL_TOPIC if plural else SINGULAR_TOPIC


# ---- step 2: draft -----------------------------------------------------------------------


class Drafter(Protocol):
    def draft(self, sample: DialogueSample, persona: Persona) -> str: ...


class TemplateDrafter:
    """The offline fallback: the persona's voice templates, filled from the sample."""

    def __init__(self, bank: dict, seed: int = 0):
        self.bank, self.rng = bank, random.Random(seed)

    def draft(self, sample: DialogueSample, persona: Persona) -> str:
        voice = persona_voice(self.bank, persona.id)
        if sample.strategy == "recall":
            fact = sample.recall_fact
            return fill_voice(
                self.rng.choice(voice["recall"]),
                voice,
                you_fact=second_person(fact["content"]),
                advice=fact["advice"],
            )
        if sample.strategy == "support":
            return fill_voice(self.rng.choice(voice["support"]), voice)
        if sample.strategy == "refuse":
            return fill_voice(self.rng.choice(voice["refuse"]), voice, topic=sample.refuse_topic)
        pairs = dict(_example_pairs(persona))
        return pairs.get(sample.trigger) or fill_voice(self.rng.choice(voice["answer"]), voice)


class OpenAICompatibleDrafter:
    """Asks an OpenAI-compatible chat endpoint (POST {base_url}/chat/completions) for the reply.

    Only the URL the user gives is contacted. The prompt is the pipeline's own, so the
    drafting model sees the persona, the history and reflection's guidance.
    """

    def __init__(self, base_url: str, model: str, api_key: str | None = None, timeout: float = 60.0):
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model, self.api_key, self.timeout = model, api_key, timeout

    def draft(self, sample: DialogueSample, persona: Persona) -> str:
        body = {
            "model": self.model,
            "messages": sample.messages(persona),
            "temperature": 0.8,
            "max_tokens": 120,
        }
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        request = urllib.request.Request(
            self.url, data=json.dumps(body).encode(), headers=headers, method="POST"
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            data = json.loads(response.read())
        try:
            return data["choices"][0]["message"]["content"].strip()
        except (KeyError, IndexError, TypeError) as e:
            raise ValueError(
                f"{self.url} answered without choices[0].message.content: {str(data)[:200]}"
            ) from e


class BackboneDrafter:
    """Drafts with a local backbone (an `HFBackbone`: the default model or a bigger local one)."""

    def __init__(self, backbone, *, adapter: str | None = None, max_new_tokens: int = 80):
        self.backbone, self.adapter, self.max_new_tokens = backbone, adapter, max_new_tokens

    def draft(self, sample: DialogueSample, persona: Persona) -> str:
        import asyncio

        from companion.backbone import GenerationParams

        params = GenerationParams(
            max_new_tokens=self.max_new_tokens, temperature=0.8, seed=zlib.crc32(sample.id.encode())
        )
        return asyncio.run(
            self.backbone.generate(sample.messages(persona), adapter=self.adapter, params=params)
        ).strip()


# ---- step 3: check -----------------------------------------------------------------------


def check_reply(
    reply: str, sample: DialogueSample, reflector: Reflector, persona: Persona | None = None
) -> list[str]:
    """Problems with `reply` for this sample (empty: keep it); with its persona, a refusal that
    goes on to explain the thing is caught too (`Reflector.after`)."""
    return reply_problems(
        reply,
        reflector,
        decision=sample.decision(),
        known=sample.events(),
        player_lines=sample.player_lines(),
        persona=persona,
    )


def reply_problems(
    reply: str,
    reflector: Reflector,
    *,
    decision: Decision,
    known: list[MemoryEvent],
    player_lines: list[str],
    persona: Persona | None = None,
) -> list[str]:
    """The runtime post-check's flag kinds for `reply`, plus "generic" for a short or stock line."""
    check = reflector.after(reply, decision=decision, known=known, player_lines=player_lines, persona=persona)
    problems = [flag.kind for flag in check.flags]
    if len(reply.split()) < 4 or GENERIC.search(reply.strip()):
        problems.append("generic")
    return problems


# ---- step 4: write -----------------------------------------------------------------------


def failure_reply(
    kind: str, sample: DialogueSample, persona: Persona, bank: dict, rng: random.Random
) -> str | None:
    """A realistic bad reply of `kind` for this sample (None where the kind does not apply)."""
    voice = persona_voice(bank, persona.id)
    failures = bank["failures"]
    if kind == "ignored_memory":
        return fill_voice(rng.choice(voice["answer"]), voice) if sample.strategy == "recall" else None
    if kind == "invented_memory":
        told = {f["id"] for f in sample.told}
        untold = [f for f in bank["facts"] if f["id"] not in told and f["type"] != "shared_history"]
        fact = rng.choice(untold)
        return fill_voice(
            rng.choice(voice["recall"]), voice, you_fact=second_person(fact["content"]), advice=fact["advice"]
        )
    if kind == "breaks_character":
        return rng.choice(failures["breaks_character"]).format(generic_tail=failures["generic_tail"])
    if kind == "generic":
        return rng.choice(failures["generic"])
    if kind == "out_of_domain":
        if sample.strategy != "refuse":
            return None
        return rng.choice(failures["out_of_domain"]).format(topic=sample.refuse_topic.capitalize())
    raise ValueError(f"unknown failure kind {kind!r}; expected one of {', '.join(FAILURE_KINDS)}")


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object per line: the files build_dialogues writes and the trainers read."""
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line]


def sft_row(sample: DialogueSample, persona: Persona) -> dict:
    return {
        "prompt": sample.messages(persona),
        "completion": [{"role": "assistant", "content": sample.reply}],
    }


def dpo_row(sample: DialogueSample, persona: Persona, rejected: str) -> dict:
    return {
        "prompt": sample.messages(persona),
        "chosen": [{"role": "assistant", "content": sample.reply}],
        "rejected": [{"role": "assistant", "content": rejected}],
    }
