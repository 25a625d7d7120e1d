"""Evaluates the backbone, bare and with trained adapters, on held-out dialogues and the
reflection scenarios; prints one table.

    python -m training.evaluation.evaluate --data data/dialogues --adapter sft=adapters/dialogue-sft \\
        --adapter dpo=adapters/dialogue-dpo
    python -m training.evaluation.evaluate --data data/dialogues --smoke          # 3 + 3 items, bare backbone

Items: the held-out samples of build_dialogues (eval.jsonl: facts never trained on) and
the scripted scenarios of training/evaluation/data/reflection_scenarios.yaml (facts summarized into a
real Chroma store, decisions made by the real reflector). For each, the reply is
generated greedily from the pipeline's own prompt and judged by the runtime post-check:

- memory use: recall items whose reply brings up the chosen memory;
- invented memory: replies that claim or contradict a memory nobody told;
- in character: replies that neither break character nor fall back on a generic line;
- refusal: out-of-world questions refused in character.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from companion.backbone import BackboneConfig, GenerationParams, HFBackbone
from companion.prompting import build_messages
from companion.reflection import Decision, Reflector
from companion.reflection.guidance import guidance
from memory.embedding import MiniLMEmbedder
from memory.events import MemoryEvent, Turn, utcnow
from memory.fast_summarizer import FastSummarizer
from memory.store import ChromaMemoryStore
from persona_adapters import PersonaRegistry
from training.common import job_parser, run, write_json
from training.data.dialogues import GENERIC, DialogueSample, read_jsonl
from training.evaluation.scenarios import load_scenarios


@dataclass
class EvalItem:
    source: str  # "heldout" or "scenarios"
    persona_id: str
    messages: list[dict]
    decision: Decision
    known: list[MemoryEvent]
    player_lines: list[str]


def heldout_items(data: Path, registry: PersonaRegistry, limit: int | None = None) -> list[EvalItem]:
    items = []
    for row in read_jsonl(data / "eval.jsonl")[:limit]:
        sample = DialogueSample(**row)
        persona = registry.get(sample.persona_id)
        items.append(
            EvalItem(
                "heldout",
                persona.id,
                sample.messages(persona),
                sample.decision(),
                sample.events(),
                sample.player_lines(),
            )  # fmt: skip
        )
    return items


def scenario_items(
    registry: PersonaRegistry, reflector: Reflector, embedder, limit: int | None = None
) -> list[EvalItem]:
    """Each scenario's facts go through the fast summarizer into a real (in-memory) Chroma store."""
    store, summarizer = ChromaMemoryStore.in_memory(embedder), FastSummarizer(embedder)
    items = []
    for scenario in load_scenarios()[:limit]:
        persona = registry.get(scenario.get("persona", "mira"))
        player = f"eval-{uuid.uuid4().hex[:8]}"
        lines = []
        for session in scenario.get("sessions") or []:
            for text in session["lines"]:
                turn = Turn(role="player", text=text, at=utcnow() - timedelta(days=session["days_ago"]))
                drafts = asyncio.run(summarizer.summarize([turn], npc_name=persona.name))
                store.add_sync(drafts, player_id=player, npc_id=persona.id, turns=[turn])
                lines.append(text)
        known = store.list_sync(player_id=player, npc_id=persona.id)
        for trigger in scenario["triggers"]:
            recalled = store.search_sync(trigger["text"], player_id=player, npc_id=persona.id, k=5)
            decision = reflector.before(trigger["text"], persona=persona, recalled=recalled)
            messages = build_messages(persona, [], trigger["text"], guidance=guidance(decision, persona))
            items.append(
                EvalItem("scenarios", persona.id, messages, decision, known, [*lines, trigger["text"]])
            )
        store.delete_sync(player_id=player)
    return items


def judge(reply: str, item: EvalItem, reflector: Reflector) -> set[str]:
    check = reflector.after(reply, decision=item.decision, known=item.known, player_lines=item.player_lines)
    kinds = {f.kind for f in check.flags}
    if len(reply.split()) < 4 or GENERIC.search(reply.strip()):
        kinds.add("generic")
    return kinds


def score(results: list[tuple[EvalItem, set[str]]]) -> dict[str, float | None]:
    def rate(items, good) -> float | None:
        return round(100 * sum(good(k) for _, k in items) / len(items), 1) if items else None

    recall = [(i, k) for i, k in results if i.decision.recall]
    refuse = [(i, k) for i, k in results if i.decision.refused]
    return {
        "n": len(results),
        "memory_use": rate(recall, lambda k: "ignored_recall" not in k),
        "invented": rate(results, lambda k: bool(k & {"invented_memory", "contradicts_memory"})),
        "in_character": rate(results, lambda k: not k & {"breaks_character", "generic"}),
        "refusal": rate(refuse, lambda k: "answered_out_of_domain" not in k),
    }


async def run_stage(
    backbone: HFBackbone, adapter: str | None, items: list[EvalItem], reflector, max_new_tokens: int
):
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    results = []
    for item in items:
        reply = (await backbone.generate(item.messages, adapter=adapter, params=params)).strip()
        results.append((item, judge(reply, item, reflector), reply))
    return results


def table(rows: dict[str, dict[str, dict]]) -> str:
    header = "| stage | set | n | memory use % | invented memory % | in character % | refusal % |"
    lines = [header, "|---|---|---|---|---|---|---|"]
    for stage, by_set in rows.items():
        for name, s in by_set.items():
            cells = [
                s[k] if s[k] is not None else "-"
                for k in ("n", "memory_use", "invented", "in_character", "refusal")
            ]
            lines.append(f"| {stage} | {name} | " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = job_parser(__doc__, smoke="3 items per set, 16-token replies")
    parser.add_argument(
        "--data", type=Path, required=True, help="a build_dialogues output folder (eval.jsonl)"
    )
    parser.add_argument("--adapter", action="append", default=[], help="NAME=PATH, one per training stage")
    parser.add_argument("--model", default="default")
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--limit", type=int, help="items per set")
    parser.add_argument("--json", type=Path, help="also write the scores and replies here")
    args = parser.parse_args(argv)
    limit = 3 if args.smoke else args.limit
    max_new_tokens = 16 if args.smoke else args.max_new_tokens
    registry, embedder = PersonaRegistry.default(), MiniLMEmbedder()
    reflector = Reflector(embedder)
    items = heldout_items(args.data, registry, limit) + scenario_items(registry, reflector, embedder, limit)
    backbone = HFBackbone.from_config(BackboneConfig(model=args.model))
    stages: dict[str | None, str] = {None: "base"}
    for spec in args.adapter:
        name, _, path = spec.partition("=")
        backbone.adapters.load(name, Path(path))
        stages[name] = name
    rows, dump = {}, {}
    for adapter, label in stages.items():
        results = asyncio.run(run_stage(backbone, adapter, items, reflector, max_new_tokens))
        rows[label] = {
            source: score([(i, k) for i, k, _ in results if i.source == source])
            for source in ("heldout", "scenarios")
        }
        dump[label] = [{"source": i.source, "persona": i.persona_id, "strategy": i.decision.strategy, "flags": sorted(k),
                        "reply": r} for i, k, r in results]  # fmt: skip
    backbone.close()
    print(table(rows))
    if args.json:
        write_json(args.json, {"scores": rows, "replies": dump})


if __name__ == "__main__":
    raise SystemExit(run(main))
