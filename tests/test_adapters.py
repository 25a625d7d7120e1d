"""Per-persona LoRA adapters on one tiny MoE backbone."""

import pytest
import torch
from peft import LoraConfig

from companion.backbone import GenerationParams, HFBackbone
from companion.errors import AdapterError
from tiny_models import tiny_mixtral


def _lora(init=True, r=4):
    return LoraConfig(
        r=r, lora_alpha=8, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=init
    )


@pytest.fixture()
def backbone(tokenizer):
    b = HFBackbone(tiny_mixtral(seed=3), tokenizer)
    yield b
    b.close()


def _logits(backbone, ids, names=None):
    kwargs = backbone.adapters.generate_kwargs(names) if names else {}
    with torch.no_grad():
        return backbone.model(ids, **kwargs).logits


IDS = torch.randint(0, 5000, (3, 10), generator=torch.Generator().manual_seed(1))


def test_zero_initialised_lora_leaves_logits_unchanged(backbone):
    before = _logits(backbone, IDS)
    backbone.adapters.add("fresh", _lora(init=True))  # peft zero-initialises B
    after = _logits(backbone, IDS, ["fresh"] * 3)
    assert torch.equal(before, after)


def test_mixed_persona_batch_equals_per_persona_runs(backbone, tmp_path):
    backbone.adapters.add("mira", _lora(init=False))
    backbone.adapters.add("rex", _lora(init=False))
    names = ["mira", "rex", None]
    mixed = _logits(backbone, IDS, names)
    for row, name in enumerate(names):
        alone = _logits(backbone, IDS[row : row + 1], [name])
        assert torch.allclose(mixed[row], alone[0], atol=1e-5), name
    # the adapters really differ, so the check above is not vacuous
    assert not torch.allclose(mixed[0], mixed[1], atol=1e-3)
    assert not torch.allclose(mixed[0], _logits(backbone, IDS[:1], [None])[0], atol=1e-3)


def test_mixed_batch_generation_equals_single_generations(backbone):
    backbone.adapters.add("mira", _lora(init=False))
    backbone.adapters.add("rex", _lora(init=False))
    prompts = ["Hello there", "Where is the ship?", "A quiet night"]
    adapters = ["mira", "rex", None]
    greedy = GenerationParams(max_new_tokens=6, temperature=0, repetition_penalty=1.0)
    mixed = backbone.generate_batch(prompts, adapters=adapters, params=greedy)
    singles = [
        backbone.generate_batch([p], adapters=[a], params=greedy)[0]
        for p, a in zip(prompts, adapters, strict=True)
    ]
    assert mixed == singles


def test_saved_adapter_reloads_unloads_and_restores_base(backbone, tmp_path):
    base = _logits(backbone, IDS)
    backbone.adapters.add("mira", _lora(init=False))
    trained = _logits(backbone, IDS, ["mira"] * 3)
    backbone.adapters.save("mira", tmp_path)
    backbone.adapters.unload("mira")
    assert backbone.adapters.names() == []
    assert torch.equal(_logits(backbone, IDS), base)

    backbone.adapters.load("mira", tmp_path / "mira")
    backbone.adapters.load("mira-copy", tmp_path / "mira")
    assert backbone.adapters.names() == ["mira", "mira-copy"]
    assert torch.allclose(_logits(backbone, IDS, ["mira-copy"] * 3), trained, atol=1e-6)
    backbone.adapters.unload("mira")
    assert backbone.adapters.names() == ["mira-copy"]
    assert backbone.info()["adapters"] == ["mira-copy"]


def test_adapter_errors_name_the_problem(backbone, tmp_path):
    with pytest.raises(AdapterError, match="not loaded"):
        backbone.adapters.check("ghost")
    with pytest.raises(AdapterError, match="adapter_config.json"):
        backbone.adapters.load("ghost", tmp_path)
    backbone.adapters.add("mira", _lora())
    with pytest.raises(AdapterError, match="already loaded"):
        backbone.adapters.add("mira", _lora())
    with pytest.raises(AdapterError, match="not loaded"):
        backbone.generate_batch(["hi"], adapters=["ghost"])


def test_an_adapter_for_another_backbone_is_refused_before_touching_the_model(backbone):
    from persona_adapters import PersonaRegistry
    from persona_adapters.registry import BUNDLED_DIR

    before = _logits(backbone, IDS)
    with pytest.raises(AdapterError, match="trained for another backbone"):
        backbone.adapters.load("mira", PersonaRegistry([BUNDLED_DIR]).adapter_dir("mira"))
    assert backbone.adapters.names() == []
    assert not any("lora" in name for name, _ in backbone.model.named_modules())
    assert torch.equal(_logits(backbone, IDS), before)
