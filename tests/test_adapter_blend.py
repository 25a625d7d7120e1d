"""training.sft.blend: a persona adapter plus a skill adapter, as one exact LoRA."""

import json

import pytest
import torch

from companion.errors import ConfigError
from tests.tiny_models import tiny_llama
from training.sft.blend import blend_adapters


def _random_lora(tmp_path, name, rank, seed, modules=("q_proj", "v_proj", "o_proj")):
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    config = LoraConfig(r=rank, lora_alpha=2 * rank, target_modules=list(modules), init_lora_weights=False)
    model = get_peft_model(tiny_llama(seed=0), config)
    model.save_pretrained(str(tmp_path / name))
    return tmp_path / name


def _merged(folder):
    from peft import PeftModel

    model = PeftModel.from_pretrained(tiny_llama(seed=0), str(folder)).merge_and_unload()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_blend_changes_each_weight_by_the_persona_change_plus_weight_times_the_skill_change(tmp_path):
    persona = _random_lora(tmp_path, "persona", rank=8, seed=1)
    skill = _random_lora(tmp_path, "skill", rank=4, seed=2)
    summary = blend_adapters(persona, skill, tmp_path / "blend", weight=0.5)
    assert summary["rank"] == 12
    assert json.loads((tmp_path / "blend" / "adapter_config.json").read_text())["r"] == 12

    base = tiny_llama(seed=0).state_dict()
    p, s, b = _merged(persona), _merged(skill), _merged(tmp_path / "blend")
    changed = [k for k in base if "q_proj" in k or "v_proj" in k or "o_proj" in k]
    assert changed
    for key in changed:
        want = base[key] + (p[key] - base[key]) + 0.5 * (s[key] - base[key])
        assert torch.allclose(b[key], want, atol=1e-5), key
        assert not torch.allclose(b[key], p[key], atol=1e-5)  # the skill's change is really in it
    for key in set(base) - set(changed):
        assert torch.equal(b[key], base[key])


def test_blend_refuses_adapters_on_different_modules(tmp_path):
    persona = _random_lora(tmp_path, "persona", rank=8, seed=1)
    skill = _random_lora(tmp_path, "skill", rank=8, seed=2, modules=("q_proj", "k_proj"))
    with pytest.raises(ConfigError, match="different modules"):
        blend_adapters(persona, skill, tmp_path / "blend")
    assert not (tmp_path / "blend").exists()


def test_blend_refuses_a_folder_without_an_adapter(tmp_path):
    persona = _random_lora(tmp_path, "persona", rank=8, seed=1)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="not a peft LoRA folder"):
        blend_adapters(persona, tmp_path / "empty", tmp_path / "blend")
