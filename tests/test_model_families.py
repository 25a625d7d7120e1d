"""Any causal LM by local path: MoE families load natively and take Companion's routing."""

import asyncio

import pytest

from companion.backbone import BackboneConfig, GenerationParams, HFBackbone, RoutingConfig, RoutingStats
from companion.errors import ModelLoadFailedError
from tiny_models import tiny_llama, tiny_mixtral, tiny_olmoe, tiny_qwen2_moe

BUILDERS = {"qwen2_moe": tiny_qwen2_moe, "olmoe": tiny_olmoe, "mixtral": tiny_mixtral, "llama": tiny_llama}


@pytest.fixture(scope="module", params=sorted(BUILDERS))
def checkpoint(request, tmp_path_factory, tokenizer):
    path = tmp_path_factory.mktemp(request.param)
    BUILDERS[request.param]().save_pretrained(path)
    tokenizer.save_pretrained(path)
    return request.param, path


def _routed(backbone, p):
    stats = RoutingStats()
    params = GenerationParams(max_new_tokens=4, temperature=0)

    async def run():
        return [d async for d in backbone.stream("Hello there", params=params, routing_stats=stats)]

    asyncio.run(run())
    return stats


def test_loads_by_path_and_routes_top_p(checkpoint):
    family, path = checkpoint
    extremes = {}
    for p in (1e-6, 1.0):
        backbone = HFBackbone.from_config(
            BackboneConfig(model=str(path), routing=RoutingConfig(policy="top_p", top_p=p))
        )
        info = backbone.info()
        assert info["source"] == str(path)
        extremes[p] = _routed(backbone, p)
        backbone.close()
    if family == "llama":
        assert info["n_experts"] == 0 and extremes[1.0].mean_experts_per_token() == []
        return
    n_experts = info["n_experts"]
    assert n_experts == 4
    assert extremes[1e-6].mean_experts_per_token() == [1.0, 1.0]
    assert extremes[1.0].mean_experts_per_token() == [float(n_experts)] * 2


def test_missing_or_empty_paths_fail_clearly(tmp_path):
    with pytest.raises(ModelLoadFailedError, match="does not exist"):
        HFBackbone.from_config(BackboneConfig(model=str(tmp_path / "nope")))
    with pytest.raises(ModelLoadFailedError, match="no config.json"):
        HFBackbone.from_config(BackboneConfig(model=str(tmp_path)))
