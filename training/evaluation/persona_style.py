"""Does a persona's adapter make the backbone sound like the persona? Perplexity on held-out lines.

    python -m training.evaluation.persona_style                    # every bundled persona with an adapter

For each persona, the NPC replies in training/evaluation/data/persona_heldout.yaml (never trained
on) are scored given the persona's system prompt and the player's line: mean negative
log-likelihood per reply token and perplexity, with the bare backbone, with the
persona's own adapter, and with the other personas' adapters (a control: an adapter
should help its own persona more than the others).
"""

from __future__ import annotations

import math
from pathlib import Path

import yaml

from companion.backbone import BackboneConfig, HFBackbone
from companion.prompting import persona_system_prompt
from persona_adapters import Persona, PersonaRegistry
from persona_adapters.registry import BUNDLED_DIR
from training.common import EVAL_DATA, job_parser, run
from training.evaluation.quality import completion_nll

HELDOUT = EVAL_DATA / "persona_heldout.yaml"


def reply_nll(backbone: HFBackbone, persona: Persona, pairs: list[dict], adapter: str | None) -> float:
    """Mean negative log-likelihood per token of the NPC replies, given system prompt and player line."""
    total, count = 0.0, 0
    for pair in pairs:
        prompt = [
            {"role": "system", "content": persona_system_prompt(persona)},
            {"role": "user", "content": pair["player"]},
        ]
        nll, n = completion_nll(backbone, prompt, pair["npc"], adapter)
        total, count = total + nll, count + n
    return total / max(count, 1)


def main(argv: list[str] | None = None) -> None:
    parser = job_parser(__doc__)
    parser.add_argument("--heldout", type=Path, default=HELDOUT)
    args = parser.parse_args(argv)
    heldout = yaml.safe_load(args.heldout.read_text(encoding="utf-8"))
    registry = PersonaRegistry([BUNDLED_DIR])
    backbone = HFBackbone.from_config(BackboneConfig())
    with_adapters = [p for p in registry.all() if registry.adapter_dir(p.id) and p.id in heldout]
    for persona in with_adapters:
        backbone.adapters.load(persona.id, registry.adapter_dir(persona.id))
    print("held-out NPC replies: mean NLL per token (perplexity); lower is closer to the persona")
    print(f"{'persona':10s} {'bare backbone':>18s} {'own adapter':>18s} {'other adapters':>18s}")
    for persona in with_adapters:
        pairs = heldout[persona.id]
        bare = reply_nll(backbone, persona, pairs, None)
        own = reply_nll(backbone, persona, pairs, persona.id)
        others = [reply_nll(backbone, persona, pairs, o.id) for o in with_adapters if o.id != persona.id]
        other = sum(others) / len(others) if others else float("nan")
        print(f"{persona.id:10s} {bare:8.3f} ({math.exp(bare):6.1f}) {own:8.3f} ({math.exp(own):6.1f}) "
              f"{other:8.3f} ({math.exp(other):6.1f})")  # fmt: skip
    backbone.close()


if __name__ == "__main__":
    raise SystemExit(run(main))
