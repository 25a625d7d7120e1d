"""Adds a skill adapter's change to each persona's own adapter: one LoRA per persona that carries both.

    python -m training.sft.blend --skill runs/r17/ul1p/round2 --out DIR [--weight 1.0] [--persona mira ...]

The personas' adapters (persona_adapters/adapters/<id>, trained on their own lines by
`training.sft.persona`) carry a voice; an adapter from the dialogue pipeline (SFT, then on-policy
DPO) carries grounding and refusals in one shared voice. Both are changes to the same base
weights, and a LoRA's change is (alpha / r) B A, so their sum is itself one LoRA of rank
r1 + r2: the A matrices stacked, the B matrices side by side, each scaled by its own alpha / r
(the skill's also by `weight`) over the new alpha / r. No training; the sum is exact.

Writes DIR/<persona id>/ (a peft adapter folder), which
`python -m training.evaluation.evaluate --persona-adapters blended=DIR` evaluates against the
bundled adapters.
"""

from __future__ import annotations

import json
from pathlib import Path

from companion.backbone.adapters import ADAPTER_CONFIG, ADAPTER_WEIGHTS, holds_adapter
from companion.errors import ConfigError
from persona_adapters import PersonaRegistry
from training.common import job_parser, run, write_json


def _read(folder: Path) -> tuple[dict, dict]:
    from safetensors.torch import load_file

    if not holds_adapter(folder, weights=True):
        raise ConfigError(
            f"{folder} is not a peft LoRA folder ({ADAPTER_CONFIG} and {ADAPTER_WEIGHTS} expected)"
        )
    config = json.loads((folder / ADAPTER_CONFIG).read_text())
    if config.get("peft_type") != "LORA" or config.get("use_dora") or config.get("rank_pattern"):
        raise ConfigError(f"{folder}: only plain LoRA adapters with one rank for every module can be blended")
    return config, load_file(str(folder / ADAPTER_WEIGHTS))


def blend_adapters(persona_dir: Path, skill_dir: Path, out: Path, *, weight: float = 1.0) -> dict:
    """Writes to `out` one LoRA whose change is the persona adapter's plus `weight` x the skill's.

    Raises:
        ConfigError: either folder is not a plain LoRA, or they adapt different modules.
    """
    import torch
    from safetensors.torch import save_file

    persona_config, persona = _read(persona_dir)
    skill_config, skill = _read(skill_dir)
    if set(persona) != set(skill):
        only = sorted(set(persona) ^ set(skill))[:3]
        raise ConfigError(f"{persona_dir} and {skill_dir} adapt different modules (e.g. {only}); retrain one")
    r1, r2 = persona_config["r"], skill_config["r"]
    rank = r1 + r2
    scale = persona_config["lora_alpha"] / r1  # the blend keeps the persona adapter's alpha / r
    s2 = weight * skill_config["lora_alpha"] / r2 / scale
    tensors = {}
    for key, a in persona.items():
        if ".lora_A." in key:
            tensors[key] = torch.cat([a, skill[key]], dim=0).contiguous()
        elif ".lora_B." in key:
            tensors[key] = torch.cat([a, skill[key] * s2], dim=1).contiguous()
        else:
            raise ConfigError(f"{persona_dir}: unexpected tensor {key} (only lora_A / lora_B can be blended)")
    out.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(out / ADAPTER_WEIGHTS))
    config = dict(persona_config, r=rank, lora_alpha=scale * rank)
    (out / ADAPTER_CONFIG).write_text(json.dumps(config, indent=2) + "\n")
    summary = {
        "persona_adapter": str(persona_dir),
        "skill_adapter": str(skill_dir),
        "skill_weight": weight,
        "rank": rank,
        "how": "the persona adapter's LoRA change plus the skill adapter's (training.sft.blend)",
    }
    write_json(out / "blend_summary.json", summary)
    return summary


def main(argv: list[str] | None = None) -> None:
    parser = job_parser(__doc__, smoke=None)
    parser.add_argument("--skill", type=Path, required=True, help="the shared adapter to add (a peft folder)")
    parser.add_argument("--out", type=Path, required=True, help="writes OUT/<persona id>/")
    parser.add_argument("--weight", type=float, default=1.0, help="scale of the skill's change (default 1.0)")
    parser.add_argument("--persona", action="append", help="a persona id (default: every bundled persona)")
    args = parser.parse_args(argv)
    registry = PersonaRegistry.default()
    for pid in args.persona or registry.ids():
        folder = registry.adapter_dir(pid)
        if folder is None:
            raise ConfigError(f"persona {pid!r} has no adapter of its own to blend with")
        blend_adapters(folder, args.skill, args.out / pid, weight=args.weight)
        print(f"{pid}: {folder} + {args.weight} x {args.skill} -> {args.out / pid}")


if __name__ == "__main__":
    raise SystemExit(run(main))
