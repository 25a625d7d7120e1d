"""Reflection's decisions on situations built from the bank, per split: the held-out figure.

    python -m training.evaluation.reflection_heldout             # both splits, a table
    python -m training.evaluation.reflection_heldout --json out.json

Each situation is a fresh player of one of the three bundled personas: facts told days earlier
(summarized by the fast summarizer and stored in a real in-memory Chroma store), then one line.
What reflection should decide:
- a later line that implies one of the facts: recall that fact;
- distress that also calls for a fact: support, and recall that fact;
- distress alone, with unrelated facts stored: support;
- an out-of-world request: refuse, unless it belongs to the persona's setting (a starship
  engineer asked about a shuttle): then answer;
- an attempt to break the role or read the instructions: refuse;
- an in-world question, with unrelated facts stored: answer, recalling nothing;
- "what do you remember about me?" with facts stored: recall one of them.
The "heldout" split holds fact kinds, phrasings and request categories that neither training
nor any threshold saw (see `training.data.reflection_examples`).
"""

from __future__ import annotations

import json
import random
import time
import uuid
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path

from companion.reflection import Reflector
from companion.reflection.recall_scorer import RecallScorer
from companion.reflection.strategy import StrategyModel
from memory.embedding import MiniLMEmbedder
from memory.events import Turn, utcnow
from memory.fast_summarizer import FastSummarizer
from memory.store import ChromaMemoryStore
from persona_adapters import get_persona
from training.common import job_parser, run
from training.data import reflection_examples as bank
from training.evaluation.quality import wilson

PERSONAS = ("mira", "marlowe", "orla")
DISTRACTORS = 3


@dataclass
class Situation:
    kind: str  # recall, support+recall, support, refuse, in-world, injection, memory-question
    persona: str
    text: str
    strategy: str
    facts: list[str]
    gold_fact: str | None = None  # the fact to recall; None: none in particular
    any_fact: bool = False  # any stored fact is a right recall (memory questions)


@dataclass
class Outcome:
    situation: Situation
    strategy: str
    recalled_gold: bool
    recalled_other: int
    recalled_any: bool
    details: list[str] = field(default_factory=list)


def situations(split: bank.Split, *, seed: int = 0) -> list[Situation]:
    rng = random.Random(seed)
    kinds = bank.fact_kinds(split)

    def distractors(exclude_group: str | None = None) -> list[str]:
        pool = [k for k in kinds if k.group != exclude_group]
        picked: list = []
        for k in rng.sample(pool, len(pool)):
            if all(k.group != p.group for p in picked):
                picked.append(k)
            if len(picked) == DISTRACTORS:
                break
        return [k.fact for k in picked]

    personas = iter(PERSONAS * 1000)
    out = []
    for kind in kinds:
        for line in kind.triggers:
            facts = [kind.fact, *distractors(kind.group)]
            out.append(
                Situation("recall", next(personas), line, "recall", rng.sample(facts, len(facts)), kind.fact)
            )
    for kind, line in bank.distress_triggers(split):
        facts = [kind.fact, *distractors(kind.group)]
        out.append(Situation("support+recall", next(personas), line, "support", facts, kind.fact))
    for _, line in bank.support_lines(split):
        out.append(Situation("support", next(personas), line, "support", distractors("loss")))
    settings = {s.persona: s for s in bank.settings() if s.persona}
    for request in bank.requests(split):
        for persona in PERSONAS:
            outside = request.out_of_world(settings[persona])
            out.append(
                Situation(
                    "refuse" if outside else "in-world",
                    persona,
                    request.text,
                    "refuse" if outside else "answer",
                    [],
                )
            )
    for line in bank.injections(split):
        out.append(Situation("injection", next(personas), line, "refuse", []))
    for persona in PERSONAS:
        for line in bank.in_world(persona, split):
            out.append(Situation("in-world", persona, line, "answer", distractors()))
    for line in bank.memory_questions(split):
        out.append(Situation("memory-question", next(personas), line, "recall", distractors(), any_fact=True))
    return out


def decide(situations_: list[Situation], reflector: Reflector, store, summarizer) -> list[Outcome]:
    outcomes = []
    for s in situations_:
        persona = get_persona(s.persona)
        player = f"heldout-{uuid.uuid4().hex[:10]}"
        sources: dict[str, str] = {}  # event id -> the fact it came from
        for i, fact in enumerate(s.facts):
            turn = Turn(id=f"{player}-{i}", role="player", text=fact, at=utcnow() - timedelta(days=3 + i))
            drafts = summarizer.summarize_sync([turn], npc_name=persona.name)
            for write in store.add_sync(drafts, player_id=player, npc_id=persona.id, turns=[turn]):
                sources[write.event.id] = fact
        recalled = store.search_sync(s.text, player_id=player, npc_id=persona.id, k=5)
        decision = reflector.before(s.text, persona=persona, recalled=recalled)
        store.delete_sync(player_id=player)
        chosen = [sources.get(c.event_id) for c in decision.recall]
        gold = s.gold_fact is not None and s.gold_fact in chosen
        outcomes.append(
            Outcome(
                situation=s,
                strategy=decision.strategy,
                recalled_gold=gold or (s.any_fact and bool(chosen)),
                recalled_other=sum(1 for c in chosen if c != s.gold_fact) if not s.any_fact else 0,
                recalled_any=bool(chosen),
                details=decision.reasons,
            )
        )
    return outcomes


def summary(outcomes: list[Outcome]) -> dict:
    """Strategy accuracy (all, and per kind of situation), recall precision and recall, refusal
    false positives on in-world questions; each in percent with n and a 95% Wilson interval."""

    def rate(hits: int, n: int) -> dict:
        low, high = wilson(hits, n)
        return {"value": 100 * hits / n if n else float("nan"), "n": n, "low": low, "high": high}

    right = [o.strategy == o.situation.strategy for o in outcomes]
    by_kind = {}
    for kind in dict.fromkeys(o.situation.kind for o in outcomes):
        of = [o for o in outcomes if o.situation.kind == kind]
        by_kind[kind] = rate(sum(o.strategy == o.situation.strategy for o in of), len(of))
    wanted = [o for o in outcomes if o.situation.gold_fact is not None or o.situation.any_fact]
    made = sum(o.recalled_gold for o in outcomes) + sum(o.recalled_other for o in outcomes)
    made_right = sum(o.recalled_gold for o in outcomes)
    in_world = [o for o in outcomes if o.situation.kind == "in-world"]
    return {
        "strategy_accuracy": rate(sum(right), len(right)),
        "by_kind": by_kind,
        "recall_precision": rate(made_right, made),
        "recall_recall": rate(sum(o.recalled_gold for o in wanted), len(wanted)),
        "refusal_false_positives": rate(sum(o.strategy == "refuse" for o in in_world), len(in_world)),
        "lines": len(outcomes),
        "fact_kinds": len({o.situation.gold_fact for o in outcomes if o.situation.gold_fact}),
    }


def print_table(results: dict[str, dict]) -> None:
    def cell(r: dict) -> str:
        return f"{r['value']:.1f}% [{r['low']:.0f}-{r['high']:.0f}] n={r['n']}"

    splits = list(results)
    print(f"{'measure':<28}" + "".join(f"{s:<34}" for s in splits))
    rows = [
        ("strategy accuracy", "strategy_accuracy"),
        ("recall precision", "recall_precision"),
        ("recall recall", "recall_recall"),
        ("refusal false positives", "refusal_false_positives"),
    ]
    for label, key in rows:
        print(f"{label:<28}" + "".join(f"{cell(results[s][key]):<34}" for s in splits))
    for kind in results[splits[0]]["by_kind"]:
        print(
            f"{'  strategy: ' + kind:<28}"
            + "".join(f"{cell(results[s]['by_kind'][kind]):<34}" for s in splits)
        )
    print(
        f"{'lines / fact kinds':<28}"
        + "".join(f"{results[s]['lines']} / {results[s]['fact_kinds']:<28}" for s in splits)
    )


def main(argv: list[str] | None = None) -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--split", choices=["train", "heldout", "both", "dev"], default="both")
    parser.add_argument(
        "--weights", type=Path, help="a folder with recall_scorer.npz and strategy.npz to use instead"
    )
    parser.add_argument("--json", type=Path, help="also write the figures (and every miss) here")
    parser.add_argument("--misses", action="store_true", help="print each wrong decision")
    args = parser.parse_args(argv)
    embedder = MiniLMEmbedder()
    reflector = Reflector(embedder)
    if args.weights:
        reflector.scorer = RecallScorer(embedder, weights_path=args.weights / "recall_scorer.npz")
        reflector.strategy = StrategyModel(embedder, weights_path=args.weights / "strategy.npz")
    store, summarizer = ChromaMemoryStore.in_memory(embedder), FastSummarizer(embedder)
    splits = ["train", "heldout"] if args.split == "both" else [args.split]
    results, misses = {}, {}
    for split in splits:
        started = time.perf_counter()
        outcomes = decide(situations(split), reflector, store, summarizer)
        results[split] = summary(outcomes)
        results[split]["seconds"] = round(time.perf_counter() - started, 1)
        misses[split] = [
            {
                "kind": o.situation.kind,
                "persona": o.situation.persona,
                "text": o.situation.text,
                "want": o.situation.strategy,
                "got": o.strategy,
                "gold_fact": o.situation.gold_fact,
                "recalled_gold": o.recalled_gold,
                "recalled_other": o.recalled_other,
                "reasons": o.details,
            }
            for o in outcomes
            if o.strategy != o.situation.strategy
            or o.recalled_other
            or ((o.situation.gold_fact or o.situation.any_fact) and not o.recalled_gold)
        ]
    print_table(results)
    if args.misses:
        for split in splits:
            for m in misses[split]:
                print(
                    f"[{split}] {m['kind']}: {m['text']!r} want {m['want']} got {m['got']}; gold recalled {m['recalled_gold']}, others {m['recalled_other']}"
                )
    if args.json:
        args.json.write_text(json.dumps({"results": results, "misses": misses}, indent=2))


if __name__ == "__main__":
    raise SystemExit(run(main))
