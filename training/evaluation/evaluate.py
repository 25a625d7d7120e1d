"""Evaluates the backbone, bare and with trained adapters, on held-out dialogues and the
reflection scenarios; prints one table.

    python -m training.evaluation.evaluate --data data/dialogues --adapter sft=adapters/dialogue-sft \\
        --adapter dpo=adapters/dialogue-dpo
    python -m training.evaluation.evaluate --data data/dialogues --smoke          # 3 + 3 items, bare backbone

Items: the held-out samples of build_dialogues (eval.jsonl: facts never trained on) and
the scripted scenarios of training/evaluation/data/reflection_scenarios.yaml (facts summarized into a
real Chroma store, decisions made by the real reflector); with --dev, the build's dev.jsonl
alone instead (training facts, its own draw: for choosing a setting, such as how many steps,
before the held-out set is read once). For each, the reply is generated greedily from the
pipeline's own prompt and judged by the runtime post-check:

- memory use: recall items whose reply brings up the chosen memory (post-check);
- grounding: recall items whose reply carries the chosen memory's own content words;
- invented memory: replies that claim or contradict a memory nobody told;
- in character: replies that neither break character nor fall back on a generic line;
- refusal: out-of-world questions refused in character;
- fluency: perplexity of each reply under a frozen reference (the dense base model) given the
  same prompt, the share of repeated word trigrams in a reply, and distinct-2 over the set.

Rates carry Wilson 95% intervals and perplexity a 95% interval (training/evaluation/quality.py).
- persona fidelity: replies a voice classifier attributes to their own persona
  (training/evaluation/persona_judge.py; its accuracy on held-out persona lines is printed
  first, so the column can be read against it);
- support: items where reflection chose support whose reply a support classifier reads as
  comfort, sympathy or help (training/evaluation/support_judge.py; its accuracy on held-out
  replies is printed first too).
"""

from __future__ import annotations

import asyncio
import math
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from companion.backbone import BackboneConfig, GenerationParams, HFBackbone
from companion.backbone.provision import prepare_default_model
from companion.errors import ConfigError
from companion.prompting import build_messages
from companion.reflection import Decision, Reflector
from companion.reflection.guidance import guidance
from memory.embedding import MiniLMEmbedder
from memory.events import MemoryEvent, Turn, utcnow
from memory.fast_summarizer import FastSummarizer
from memory.store import ChromaMemoryStore
from persona_adapters import Persona, PersonaRegistry
from training.common import job_parser, load_persona_adapters, run, write_json
from training.data.dialogues import DialogueSample, load_bank, read_jsonl, reply_problems
from training.evaluation.persona_judge import PersonaJudge
from training.evaluation.quality import (
    completion_nll,
    distinct_n,
    grounded,
    mean_interval,
    rate,
    repetition,
)
from training.evaluation.scenarios import load_scenarios
from training.evaluation.support_judge import SupportJudge


@dataclass
class EvalItem:
    source: str  # "heldout", "scenarios" or "dev"
    persona: Persona
    messages: list[dict]
    decision: Decision
    known: list[MemoryEvent]
    player_lines: list[str]

    @property
    def persona_id(self) -> str:
        return self.persona.id


def heldout_items(
    data: Path, registry: PersonaRegistry, limit: int | None = None, *, dev: bool = False
) -> list[EvalItem]:
    """The build's held-out dialogues (eval.jsonl), or with `dev` its development ones (dev.jsonl)."""
    path = data / ("dev.jsonl" if dev else "eval.jsonl")
    if not path.is_file():
        raise ConfigError(
            f"{path} does not exist; build it with python -m training.data.build_dialogues --out {data}"
        )
    items = []
    for row in read_jsonl(path)[:limit]:
        sample = DialogueSample(**row)
        persona = registry.get(sample.persona_id)
        items.append(
            EvalItem(
                "dev" if dev else "heldout",
                persona,
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
            items.append(EvalItem("scenarios", persona, messages, decision, known, [*lines, trigger["text"]]))
        store.delete_sync(player_id=player)
    return items


def judge(reply: str, item: EvalItem, reflector: Reflector) -> set[str]:
    return set(
        reply_problems(
            reply,
            reflector,
            decision=item.decision,
            known=item.known,
            player_lines=item.player_lines,
            persona=item.persona,
        )
    )


def score(results: list[tuple[EvalItem, set[str], str, float | None, str, bool]]) -> dict:
    """The columns for one stage and set: each (item, flags, reply, per-token NLL under the
    reference, the persona the judge attributes the reply to, whether the support judge reads
    the reply as support)."""

    def rate_of(items, good) -> dict | None:
        return rate(sum(bool(good(r)) for r in items), len(items)) if items else None

    recall = [r for r in results if r[0].decision.recall]
    refuse = [r for r in results if r[0].decision.refused]
    support = [r for r in results if r[0].decision.strategy == "support"]
    nll = [r[3] for r in results if r[3] is not None]
    mean, low, high = mean_interval(nll) if nll else (math.nan,) * 3
    return {
        "n": len(results),
        "memory_use": rate_of(recall, lambda r: "ignored_recall" not in r[1]),
        "grounding": rate_of(recall, lambda r: grounded(r[2], r[0].decision.recall[0].content)),
        "invented": rate_of(results, lambda r: r[1] & {"invented_memory", "contradicts_memory"}),
        "in_character": rate_of(results, lambda r: not r[1] & {"breaks_character", "generic"}),
        "refusal": rate_of(refuse, lambda r: "answered_out_of_domain" not in r[1]),
        "persona": rate_of(results, lambda r: r[4] == r[0].persona_id),
        "support": rate_of(support, lambda r: r[5]),
        "perplexity": {
            "mean": round(math.exp(mean), 1),
            "low": round(math.exp(low), 1),
            "high": round(math.exp(high), 1),
        }
        if nll
        else None,
        "repetition_pct": round(100 * sum(repetition(r[2]) for r in results) / len(results), 1)
        if results
        else None,
        "distinct_2": round(distinct_n([r[2] for r in results]) or 0.0, 3),
    }


def reference_nll(reference, results: list[tuple[EvalItem, set[str], str]]) -> list[float | None]:
    """Per-token NLL of each reply under the frozen reference model, given the item's prompt."""
    out = []
    for item, _, reply in results:
        total, n = completion_nll(reference, item.messages, reply) if reply else (0.0, 0)
        out.append(total / n if n else None)
    return out


async def run_stage(backbone: HFBackbone, adapter_of, items: list[EvalItem], reflector, max_new_tokens: int):
    """Greedy replies to every item, each from `adapter_of(item)` (None: the bare backbone)."""
    params = GenerationParams(max_new_tokens=max_new_tokens, temperature=0.0)
    results = []
    for item in items:
        reply = (await backbone.generate(item.messages, adapter=adapter_of(item), params=params)).strip()
        results.append((item, judge(reply, item, reflector), reply))
    return results


COLUMNS = (
    ("memory use %", "memory_use"), ("grounding %", "grounding"), ("invented memory %", "invented"),
    ("in character %", "in_character"), ("refusal %", "refusal"), ("persona fidelity %", "persona"),
    ("support %", "support"),
)  # fmt: skip


def table(rows: dict[str, dict[str, dict]]) -> str:
    """Markdown: one line per stage and set; rates as "pct [low-high]" (Wilson 95%)."""
    header = ["stage", "set", "n", *(name for name, _ in COLUMNS), "perplexity (dense base)", "repeated 3-grams %",
              "distinct-2"]  # fmt: skip
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for stage, by_set in rows.items():
        for name, s in by_set.items():
            cells = [str(s["n"])]
            for _, key in COLUMNS:
                r = s[key]
                cells.append(f"{r['pct']:.0f} [{r['low']:.0f}-{r['high']:.0f}]" if r else "-")
            ppl = s["perplexity"]
            cells.append(f"{ppl['mean']} [{ppl['low']}-{ppl['high']}]" if ppl else "-")
            cells += [str(s["repetition_pct"]), str(s["distinct_2"])]
            lines.append(f"| {stage} | {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def load_stages(
    backbone, registry, items: list[EvalItem], specs: list[str], persona_stages: list[str] = ()
) -> dict:
    """label -> (item -> adapter name or None): the bare base, each NAME=PATH adapter, and for
    each NAME[=DIR] of `persona_stages`, each item's persona's own adapter: DIR/<persona id>,
    or without DIR the persona's registered (bundled) one."""
    stages = {"base": lambda item: None}
    for spec in specs:
        name, _, path = spec.partition("=")
        backbone.adapters.load(name, Path(path))
        stages[name] = lambda item, name=name: name
    for spec in persona_stages:
        stage, _, root = spec.partition("=")
        persona_ids = sorted({i.persona_id for i in items})
        load_persona_adapters(backbone, registry, persona_ids, stage, root=root or None, purpose="evaluate")
        stages[stage] = lambda item, stage=stage: f"{stage}-{item.persona_id}"
    return stages


def main(argv: list[str] | None = None) -> None:
    parser = job_parser(__doc__, smoke="3 items per set, 16-token replies")
    parser.add_argument(
        "--data", type=Path, required=True, help="a build_dialogues output folder (eval.jsonl)"
    )
    parser.add_argument("--adapter", action="append", default=[], help="NAME=PATH, one per training stage")
    parser.add_argument(
        "--persona-adapters",
        metavar="NAME[=DIR]",
        action="append",
        default=[],
        help="also a stage NAME where each reply comes from its persona's own adapter: DIR/<persona id>, "
        "or without DIR the bundled one",
    )
    parser.add_argument("--model", default="default")
    parser.add_argument(
        "--reference",
        default=None,
        help="the frozen model that scores fluency (default: the dense base checkpoint)",
    )
    parser.add_argument("--max-new-tokens", type=int, default=48)
    parser.add_argument("--limit", type=int, help="items per set")
    parser.add_argument("--json", type=Path, help="also write the scores and replies here")
    parser.add_argument(
        "--dev",
        action="store_true",
        help="the build's dev.jsonl (training facts) alone, to choose a setting before one held-out read",
    )
    args = parser.parse_args(argv)
    limit = 3 if args.smoke else args.limit
    max_new_tokens = 16 if args.smoke else args.max_new_tokens
    registry, embedder = PersonaRegistry.default(), MiniLMEmbedder()
    reflector = Reflector(embedder)
    items = heldout_items(args.data, registry, limit, dev=args.dev)
    if not args.dev:
        items += scenario_items(registry, reflector, embedder, limit)
    backbone = HFBackbone.from_config(BackboneConfig(model=args.model))
    stages = load_stages(backbone, registry, items, args.adapter, args.persona_adapters)
    generated = {label: asyncio.run(run_stage(backbone, adapter_of, items, reflector, max_new_tokens))
                 for label, adapter_of in stages.items()}  # fmt: skip
    backbone.close()
    reference = HFBackbone.from_config(
        BackboneConfig(model=args.reference or str(prepare_default_model().dense_dir))
    )
    persona_judge = PersonaJudge(
        embedder, [registry.get(pid) for pid in sorted({i.persona_id for i in items})], load_bank()
    )
    trust = persona_judge.heldout_accuracy()
    print(
        f"persona judge: {trust['pct']}% [{trust['low']}-{trust['high']}] right on {trust['n']} held-out persona lines"
    )
    support_judge = SupportJudge(embedder)
    support_trust = support_judge.heldout_accuracy()
    print(
        f"support judge: {support_trust['pct']}% [{support_trust['low']}-{support_trust['high']}] right on "
        f"{support_trust['n']} held-out replies"
    )
    rows, dump = {}, {}
    for label, results in generated.items():
        nlls, voices = reference_nll(reference, results), persona_judge.attribute([r for _, _, r in results])
        supportive = support_judge.supportive([r for _, _, r in results])
        scored = [
            (*r, nll, voice, s) for r, nll, voice, s in zip(results, nlls, voices, supportive, strict=True)
        ]
        rows[label] = {
            source: score([r for r in scored if r[0].source == source])
            for source in dict.fromkeys(i.source for i in items)
        }
        dump[label] = [{"source": i.source, "persona": i.persona_id, "strategy": i.decision.strategy, "flags": sorted(k),
                        "reply": r, "nll_per_token": nll, "voice": v, "supportive": s}
                       for i, k, r, nll, v, s in scored]  # fmt: skip
    reference.close()
    print(table(rows))
    if args.json:
        write_json(
            args.json,
            {"scores": rows, "persona_judge": trust, "support_judge": support_trust, "replies": dump},
        )


if __name__ == "__main__":
    raise SystemExit(run(main))
