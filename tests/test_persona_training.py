"""Persona adapters: training data, `companion persona train`, and the bundled adapters."""

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from companion.prompting import persona_system_prompt
from persona_adapters import PersonaRegistry
from persona_adapters.registry import BUNDLED_DIR
from training.sft.persona import persona_conversations

REGISTRY = PersonaRegistry([BUNDLED_DIR])


def test_training_rows_are_prompt_completion_pairs_of_npc_lines():
    mira = REGISTRY.get("mira")
    rows = persona_conversations(mira)
    assert len(rows) == sum(
        1 for d in mira.example_dialogues for i, line in enumerate(d) if line.role == "npc" and i > 0
    )
    first = rows[0]
    assert first["prompt"][0] == {"role": "system", "content": persona_system_prompt(mira)}
    assert first["prompt"][-1]["role"] == "user" and [m["role"] for m in first["completion"]] == ["assistant"]


@pytest.mark.slow
def test_bundled_personas_load_with_their_adapters_and_change_generations():
    from companion.backbone import GenerationParams, HFBackbone

    backbone = HFBackbone.from_config()
    ids = [p.id for p in REGISTRY.all()]
    for persona_id in ids:
        path = REGISTRY.adapter_dir(persona_id)
        assert path is not None, f"{persona_id} has no adapter"
        backbone.adapters.load(persona_id, path)
    greedy = GenerationParams(max_new_tokens=8, temperature=0, repetition_penalty=1.0)
    prompt = [{"role": "user", "content": "Hello, who are you?"}]
    outputs = backbone.generate_batch([prompt] * 4, adapters=[*ids, None], params=greedy)
    backbone.close()
    assert len(set(outputs)) >= 2  # adapters change what the backbone says
    assert outputs[-1] not in outputs[:-1] or len(set(outputs[:-1])) > 1


@pytest.mark.slow
def test_persona_train_smoke_through_the_console_command(subprocess_env, tmp_path):
    import torch

    from companion.backbone import HFBackbone

    env = dict(subprocess_env, COMPANION_DATA_DIR=str(tmp_path))
    companion = Path(sys.executable).parent / "companion"  # the console script users run
    result = subprocess.run(
        [str(companion), "persona", "train", "orla", "--smoke"],
        capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    adapter = tmp_path / "adapters" / "orla"
    assert (adapter / "adapter_model.safetensors").is_file()
    user_copy = yaml.safe_load((tmp_path / "personas" / "orla.yaml").read_text())
    assert user_copy["adapter_path"] == "../adapters/orla"
    registry = PersonaRegistry.default(tmp_path)
    assert registry.adapter_dir("orla") == adapter.resolve()

    backbone = HFBackbone.from_config()
    backbone.adapters.load("orla-smoke", adapter)
    prompt = backbone.render_prompt([{"role": "user", "content": "What's that noise in the engine room?"}])
    ids = backbone.tokenizer(prompt, return_tensors="pt", add_special_tokens=False).input_ids
    with torch.no_grad():
        trained = backbone.model(ids, **backbone.adapters.generate_kwargs(["orla-smoke"])).logits[0, -1]
        bare = backbone.model(ids, **backbone.adapters.generate_kwargs([None])).logits[0, -1]
    backbone.close()
    # the next-token distribution the generation samples from has moved
    assert (trained - bare).abs().max().item() > 1e-3
