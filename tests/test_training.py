"""Training (DESIGN §8): the dialogue data builder and its checks, SFT and DPO change only the
adapter, router training moves experts per token; and every script end to end in smoke mode."""

import json
import random
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest
import torch
from safetensors.torch import load_file

from companion.errors import ConfigError
from companion.reflection import Reflector
from companion.reflection.guidance import second_person
from persona_adapters import PersonaRegistry
from persona_adapters.registry import BUNDLED_DIR
from tiny_models import tiny_mixtral
from training.data.build_dialogues import BuildConfig, build
from training.data.dialogues import (
    FAILURE_KINDS,
    OpenAICompatibleDrafter,
    TemplateDrafter,
    check_reply,
    failure_reply,
    fill_voice,
    load_bank,
    sample_dialogues,
)
from training.dpo.train import DPOTrainingConfig, train_dpo
from training.evaluation.evaluate import heldout_items
from training.moe.router import RouterTrainingConfig, router_parameters, train_router
from training.sft.lora import LoraSFTConfig, train_lora_sft

REGISTRY = PersonaRegistry([BUNDLED_DIR])
PERSONAS = [REGISTRY.get(p) for p in ("mira", "orla", "marlowe")]


@pytest.fixture(scope="module")
def reflector(minilm):
    return Reflector(minilm)


@pytest.fixture(scope="module")
def built(tmp_path_factory, reflector):
    out = tmp_path_factory.mktemp("dialogues")
    report = build(BuildConfig(n_train=24, n_eval=6), out, registry=REGISTRY, reflector=reflector)
    return out, report


def test_the_builder_writes_sets_that_datasets_and_trl_accept(built, tokenizer):
    from datasets import load_dataset
    from trl.data_utils import is_conversational, maybe_apply_chat_template

    out, report = built
    sft = load_dataset("json", data_files=str(out / "sft.jsonl"), split="train")
    dpo = load_dataset("json", data_files=str(out / "dpo.jsonl"), split="train")
    assert len(sft) == report["kept"] > 12 and len(dpo) == report["n_dpo"] >= len(sft)
    assert set(sft.column_names) == {"prompt", "completion"}
    assert set(dpo.column_names) == {"prompt", "chosen", "rejected"}
    for row in [sft[0], dpo[0], dpo[len(dpo) - 1]]:
        assert is_conversational(row)
        rendered = maybe_apply_chat_template(row, tokenizer)
        assert all(isinstance(v, str) and v for v in rendered.values())
    # multi-turn: the prompt holds the earlier session, then the player's line
    assert [m["role"] for m in dpo[0]["prompt"]][:3] == ["system", "user", "assistant"]
    assert all(r["chosen"] != r["rejected"] for r in dpo)
    evaluation = [json.loads(line) for line in (out / "eval.jsonl").read_text().splitlines()]
    heldout = set(BuildConfig().heldout_facts)
    assert all({f["id"] for f in e["told"]} <= heldout for e in evaluation)
    trained_facts = {line for r in sft for m in r["prompt"] for line in [m["content"]]}
    assert not any("I hurt my knee badly" in t for t in trained_facts)  # a held-out fact never trains


def test_the_dev_set_holds_training_facts_and_the_evaluation_reads_it_alone(built, tmp_path):
    out, report = built
    dev = [json.loads(line) for line in (out / "dev.jsonl").read_text().splitlines()]
    assert len(dev) == report["n_dev"] == BuildConfig().n_dev
    heldout = set(BuildConfig().heldout_facts)
    assert all(e["told"] and not {f["id"] for f in e["told"]} & heldout for e in dev)
    items = heldout_items(out, REGISTRY, 5, dev=True)
    assert len(items) == 5 and {i.source for i in items} == {"dev"}
    assert {i.source for i in heldout_items(out, REGISTRY, 5)} == {"heldout"}
    with pytest.raises(ConfigError, match="build_dialogues"):
        heldout_items(tmp_path, REGISTRY, dev=True)  # a build from before dev.jsonl existed


@pytest.mark.parametrize("kind", FAILURE_KINDS)
def test_the_checks_reject_a_planted_bad_dialogue_of_each_kind(kind, reflector):
    bank = load_bank()
    strategy = {"ignored_memory": "recall", "out_of_domain": "refuse"}.get(kind, "recall")
    rng = random.Random(3)
    samples = [s for s in sample_dialogues(PERSONAS, bank, n=24, seed=5) if s.strategy == strategy]
    for sample in samples[:3]:
        persona = REGISTRY.get(sample.persona_id)
        good = TemplateDrafter(bank).draft(sample, persona)
        assert check_reply(good, sample, reflector) == [], good
        bad = failure_reply(kind, sample, persona, bank, rng)
        assert check_reply(bad, sample, reflector), f"{kind} not caught: {bad!r}"


@pytest.mark.parametrize(
    ("topic", "line"),
    [
        ("smartphones", "I don't know what smartphones are, pal."),
        ("horses and saddles", "I don't know what horses and saddles are, pal."),
        ("the internet", "I don't know what the internet is, pal."),
        ("DNA testing", "I don't know what DNA testing is, pal."),
    ],
)
def test_a_refusal_template_agrees_with_its_topic(topic, line):
    voice = {"address": "pal"}
    assert fill_voice("I don't know what {topic} {is}, {address}.", voice, topic=topic) == line
    pronoun = fill_voice("{topic}? Never heard of {it}.", voice, topic=topic)
    assert pronoun.endswith("them.") == line.endswith("are, pal.")


class FakeOpenAIEndpoint(BaseHTTPRequestHandler):
    """A loopback stand-in for an OpenAI-compatible server: records requests, answers one line."""

    requests: list = []
    answer = "Didn't you tell me you have a really sensitive stomach, love? Then maybe go easy on the spice."

    def do_POST(self):  # noqa: N802 - http.server's naming
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        FakeOpenAIEndpoint.requests.append((self.path, self.headers.get("Authorization"), body))
        payload = json.dumps(
            {"choices": [{"message": {"role": "assistant", "content": self.answer}}]}
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


def test_the_openai_compatible_drafter_sends_the_pipeline_prompt(reflector):
    server = HTTPServer(("127.0.0.1", 0), FakeOpenAIEndpoint)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        bank = load_bank()
        sample = next(s for s in sample_dialogues(PERSONAS, bank, n=3, seed=1) if s.persona_id == "mira")
        sample.told = [f for f in bank["facts"] if f["id"] == "stomach"]
        sample.recall_fact = sample.told[0]
        drafter = OpenAICompatibleDrafter(
            f"http://127.0.0.1:{server.server_port}/v1", "local-model", api_key="k"
        )
        reply = drafter.draft(sample, REGISTRY.get("mira"))
        path, auth, body = FakeOpenAIEndpoint.requests[-1]
        assert path == "/v1/chat/completions" and auth == "Bearer k" and body["model"] == "local-model"
        assert body["messages"] == sample.messages(REGISTRY.get("mira"))
        assert reply == FakeOpenAIEndpoint.answer
        sample.reply = reply
        assert check_reply(reply, sample, reflector) == []
    finally:
        server.shutdown()


def test_the_local_backbone_drafter_drafts_and_the_checks_judge_it(tokenizer, reflector):
    from companion.backbone import HFBackbone
    from training.data.dialogues import BackboneDrafter

    backbone = HFBackbone(tiny_mixtral(), tokenizer)
    sample = sample_dialogues(PERSONAS, load_bank(), n=1, seed=2)[0]
    reply = BackboneDrafter(backbone, max_new_tokens=6).draft(sample, REGISTRY.get(sample.persona_id))
    backbone.close()
    assert isinstance(reply, str) and reply
    sample.reply = reply
    assert "ignored_recall" in check_reply(reply, sample, reflector)  # random weights never recall the fact


def test_the_continuation_drafter_opens_with_the_likeliest_template_and_lets_the_model_go_on(tokenizer):
    from companion.backbone import GenerationParams, HFBackbone
    from training.data.continuation import ContinuationDrafter, finished
    from training.evaluation.quality import completion_nlls

    bank = load_bank()
    backbone = HFBackbone(tiny_mixtral(), tokenizer)
    drafter = ContinuationDrafter(backbone, bank, max_new_tokens=8)
    by_strategy = {s.strategy: s for s in sample_dialogues(PERSONAS, bank, n=12, seed=4)}
    try:
        recall = by_strategy["recall"]
        persona = REGISTRY.get(recall.persona_id)
        openings = drafter.openings(recall, persona)
        fact = second_person(recall.recall_fact["content"])
        assert f"Didn't you tell me {fact}?" in openings and all(fact in o for o in openings)
        nlls = completion_nlls(backbone, recall.messages(persona), openings)
        likeliest = min(zip(openings, nlls, strict=True), key=lambda c: c[1][0] / c[1][1])[0]
        assert drafter.draft(recall, persona).startswith(likeliest)
        refuse = by_strategy["refuse"]
        assert all(
            refuse.refuse_topic in o for o in drafter.openings(refuse, REGISTRY.get(refuse.persona_id))
        )
        answer = by_strategy["answer"]
        assert drafter.openings(answer, REGISTRY.get(answer.persona_id)) == []
        own = backbone.generate_batch(
            [backbone.render_prompt(answer.messages(REGISTRY.get(answer.persona_id)))],
            params=GenerationParams(max_new_tokens=48, temperature=0),
        )[0]
        assert drafter.draft(answer, REGISTRY.get(answer.persona_id)) == finished(own)  # the base's own reply
        first_version = ContinuationDrafter(backbone, bank, own=())
        assert first_version.draft(answer, REGISTRY.get(answer.persona_id)) == TemplateDrafter(bank).draft(
            answer, REGISTRY.get(answer.persona_id)
        )  # the persona's own example lines
    finally:
        backbone.close()


def test_a_personas_voice_adapter_chooses_the_opening_and_writes_the_continuation(tokenizer):
    from peft import LoraConfig

    from companion.backbone import GenerationParams, HFBackbone
    from training.data.continuation import ContinuationDrafter, finished
    from training.evaluation.quality import completion_nlls

    bank = load_bank()
    backbone = HFBackbone(tiny_mixtral(), tokenizer)
    torch.manual_seed(0)  # the adapter's random weights
    lora = LoraConfig(
        r=4, lora_alpha=64, target_modules=["q_proj", "v_proj", "o_proj"], init_lora_weights=False
    )
    backbone.adapters.add("voice", lora)
    by_strategy = {s.strategy: s for s in sample_dialogues(PERSONAS, bank, n=12, seed=4)}
    recall, answer = by_strategy["recall"], by_strategy["answer"]
    persona = REGISTRY.get(recall.persona_id)
    other = next(p for p in ("mira", "orla", "marlowe") if p != answer.persona_id)
    try:
        voiced = ContinuationDrafter(backbone, bank, max_new_tokens=8, voice_adapters={persona.id: "voice"})
        plain = ContinuationDrafter(backbone, bank, max_new_tokens=8)
        openings = voiced.openings(recall, persona)
        under = completion_nlls(backbone, recall.messages(persona), openings, adapter="voice")
        bare = completion_nlls(backbone, recall.messages(persona), openings)
        assert under != bare  # the adapter really changes the scores, so the checks below can fail
        likeliest = min(zip(openings, under, strict=True), key=lambda c: c[1][0] / c[1][1])[0]
        asked, generate = [], backbone.generate_batch

        def spy(prompts, adapters=None, params=None):  # which adapter writes the continuation
            asked.append(adapters)
            return generate(prompts, adapters=adapters, params=params)

        backbone.generate_batch = spy
        drafted = voiced.draft(recall, persona)
        assert drafted.startswith(likeliest) and asked == [["voice"]]
        backbone.generate_batch = generate
        answer_persona = REGISTRY.get(answer.persona_id)
        prompt = backbone.render_prompt(answer.messages(answer_persona))
        greedy = GenerationParams(max_new_tokens=48, temperature=0)
        own = backbone.generate_batch([prompt], adapters=["voice"], params=greedy)[0]
        by_voice = ContinuationDrafter(backbone, bank, voice_adapters={answer.persona_id: "voice"})
        assert by_voice.draft(answer, answer_persona) == finished(own)  # the voice's own reply
        elsewhere = ContinuationDrafter(backbone, bank, voice_adapters={other: "voice"})
        assert elsewhere.draft(answer, answer_persona) == plain.draft(answer, answer_persona) != finished(own)
    finally:
        backbone.close()


def test_a_persona_build_loads_each_personas_bundled_adapter_and_names_a_missing_one():
    from training.common import load_persona_adapters
    from training.data.build_dialogues import BuildConfig

    class FakeBackbone:
        def __init__(self):
            self.adapters = self
            self.loaded = {}

        def load(self, name, path):
            self.loaded[name] = path

    class FakeRegistryWithoutAdapters:
        def adapter_dir(self, persona_id):
            return None

    backbone, ids = FakeBackbone(), [p.id for p in PERSONAS]
    names = load_persona_adapters(backbone, REGISTRY, ids, "voice", purpose="draft with")
    assert names == {pid: f"voice-{pid}" for pid in ids}
    assert backbone.loaded == {f"voice-{pid}": REGISTRY.adapter_dir(pid) for pid in ids}
    with pytest.raises(ConfigError, match="no adapter to draft with .*companion persona train mira"):
        load_persona_adapters(
            FakeBackbone(), FakeRegistryWithoutAdapters(), ["mira"], "voice", purpose="draft with"
        )
    with pytest.raises(ConfigError, match="continue_with is 'teacher'"):
        BuildConfig(drafter="continuation", continue_with="teacher")
    with pytest.raises(ConfigError, match="is for the continuation drafter; the drafter is 'backbone'"):
        BuildConfig(drafter="backbone", continue_with="persona")


def test_a_refusal_whose_continuation_explains_the_thing_keeps_its_opening_alone(tokenizer, reflector):
    from companion.backbone import HFBackbone
    from training.data.continuation import ContinuationDrafter

    bank = load_bank()
    backbone = HFBackbone(tiny_mixtral(), tokenizer)
    refuse = next(s for s in sample_dialogues(PERSONAS, bank, n=12, seed=4) if s.strategy == "refuse")
    persona = REGISTRY.get(refuse.persona_id)
    try:
        for tail, kept in [
            ("They are small computers everyone carries, with apps and cameras.", False),
            ("Travellers bring all sorts of strange words to this inn.", True),
        ]:
            # what the model went on with
            backbone.generate_batch = lambda prompts, params, adapters=None, tail=tail: [tail]
            drafted = ContinuationDrafter(backbone, bank, reflector=reflector).draft(refuse, persona)
            assert drafted.endswith(tail) is kept, drafted
            assert drafted in ContinuationDrafter(backbone, bank).openings(refuse, persona) or kept
    finally:
        backbone.close()


@pytest.mark.parametrize(
    ("text", "opening", "first"),
    [
        (
            "Smartphones? Never heard of such a thing, love. Stew?",
            "Smartphones? Never heard of such a thing, love.",
            "Smartphones?",
        ),
        (
            "Didn't you tell me you hurt your knee? Then rest.",
            "Didn't you tell me you hurt your knee?",
            "Didn't you tell me you hurt your knee?",
        ),
        ("  and then the road went on", "and then the road went on", ""),
    ],
)
def test_openings_take_whole_sentences_and_a_continuation_keeps_only_a_finished_one(text, opening, first):
    from training.data.continuation import first_sentence
    from training.data.continuation import opening as opening_of

    assert opening_of(text) == opening
    assert first_sentence(text) == first


def test_an_own_reply_is_cut_to_its_finished_sentences():
    from training.data.continuation import finished

    assert finished("Stew? Never heard of it, love. And then the") == "Stew? Never heard of it, love."
    assert finished("no end at all") == "no end at all"


def test_an_unreachable_endpoint_falls_back_to_the_offline_drafter(tmp_path, reflector):
    from services import free_port

    config = BuildConfig(n_train=3, n_eval=0, drafter="openai", endpoint=f"http://127.0.0.1:{free_port()}/v1",
                         model="m")  # fmt: skip
    report = build(config, tmp_path, registry=REGISTRY, reflector=reflector)
    assert report["fallback_drafts"] == 3 and report["kept"] == 3


def _snapshot(model) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _base_unchanged(model, before: dict[str, torch.Tensor]) -> None:
    """Every non-LoRA weight of the (peft-wrapped, in place) model equals its value before training."""
    compared = 0
    for name, value in model.state_dict().items():
        if "lora_" in name:
            continue
        key = name.replace("base_model.model.", "").replace(".base_layer", "")
        assert torch.equal(value, before[key]), f"{key} changed"
        compared += 1
    assert compared == len(before)


@pytest.fixture(scope="module")
def sft_adapter(built, tiny_checkpoint, tmp_path_factory):
    out, _ = built
    rows = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    model = tiny_mixtral()
    before = _snapshot(model)
    adapter = tmp_path_factory.mktemp("sft")
    config = LoraSFTConfig(steps=3, batch_size=2, max_length=384, learning_rate=1e-2)
    summary = train_lora_sft(rows, adapter, model_dir=tiny_checkpoint, config=config, model=model)
    return adapter, model, before, summary


def test_sft_trains_only_the_adapter(sft_adapter):
    adapter, model, before, summary = sft_adapter
    _base_unchanged(model, before)
    weights = load_file(str(adapter / "adapter_model.safetensors"))
    lora_b = [v for k, v in weights.items() if "lora_B" in k]
    assert lora_b and all(v.abs().sum() > 0 for v in lora_b)  # B starts at zero: training moved it
    assert summary["steps"] == 3


def test_sft_can_continue_an_adapter_from_its_weights(built, sft_adapter, tiny_checkpoint, tmp_path):
    out, _ = built
    adapter, *_ = sft_adapter
    rows = [json.loads(line) for line in (out / "sft.jsonl").read_text().splitlines()]
    config = LoraSFTConfig(steps=1, batch_size=2, max_length=384, learning_rate=1e-9)
    continued = tmp_path / "continued"
    train_lora_sft(rows, continued, model_dir=tiny_checkpoint, config=config, model=tiny_mixtral(),
                   init_adapter=adapter)  # fmt: skip
    start, end = (load_file(str(d / "adapter_model.safetensors")) for d in (adapter, continued))
    assert start.keys() == end.keys()
    for key, value in start.items():  # one step at 1e-9 moves nothing measurably: B is the SFT's, not 0
        assert torch.allclose(end[key], value, atol=1e-6), key
    with pytest.raises(ConfigError, match="no peft adapter"):
        train_lora_sft(rows, tmp_path / "x", model_dir=tiny_checkpoint, config=config, model=tiny_mixtral(),
                       init_adapter=tmp_path / "missing")  # fmt: skip


def test_dpo_starts_from_the_sft_adapter_and_changes_only_it(built, sft_adapter, tiny_checkpoint, tmp_path):
    out, _ = built
    adapter, *_ = sft_adapter
    rows = [json.loads(line) for line in (out / "dpo.jsonl").read_text().splitlines()]
    model = tiny_mixtral()
    before = _snapshot(model)
    dpo_out = tmp_path / "dpo"
    settings = DPOTrainingConfig(steps=2, batch_size=2, max_length=384, learning_rate=1e-2)
    summary = train_dpo(rows, adapter, dpo_out, model_dir=tiny_checkpoint, settings=settings, model=model)
    _base_unchanged(model, before)
    sft_weights = load_file(str(adapter / "adapter_model.safetensors"))
    dpo_weights = load_file(str(dpo_out / "adapter_model.safetensors"))
    assert sft_weights.keys() == dpo_weights.keys()
    assert any(not torch.equal(sft_weights[k], dpo_weights[k]) for k in sft_weights)
    assert summary["pairs"] == len(rows)


def test_an_sft_weight_adds_the_chosen_replies_nll_to_the_dpo_loss(
    built, sft_adapter, tiny_checkpoint, tmp_path
):
    """At the first step the policy is its own reference, so plain DPO's loss is log 2; with
    sft_weight the chosen replies' mean NLL (positive) comes on top, at that weight."""
    out, _ = built
    adapter, *_ = sft_adapter
    rows = [json.loads(line) for line in (out / "dpo.jsonl").read_text().splitlines()][:4]
    first = {}
    for weight in (0.0, 1.0, 2.0):
        settings = DPOTrainingConfig(
            steps=1, batch_size=2, max_length=384, learning_rate=1e-3, sft_weight=weight
        )
        summary = train_dpo(
            rows, adapter, tmp_path / f"dpo-{weight}", model_dir=tiny_checkpoint, settings=settings
        )
        first[weight] = summary["first_loss"]
    assert first[0.0] == pytest.approx(0.6931, abs=0.02)  # LoRA dropout: not quite its own reference
    nll = first[1.0] - first[0.0]
    assert nll > 1.0  # a randomly initialised model's NLL on real text is several nats
    assert first[2.0] - first[0.0] == pytest.approx(2 * nll, rel=1e-3)
    with pytest.raises(ConfigError, match="sft_weight"):
        DPOTrainingConfig(sft_weight=-0.5)


def test_router_training_changes_only_routers_and_moves_experts_per_token(tokenizer):
    model = tiny_mixtral()
    with torch.no_grad():  # fresh routers as upcycling makes them: near-uniform
        for layer in model.model.layers:
            layer.mlp.gate.weight.normal_(0, 0.01)
    before = _snapshot(model)
    texts = [
        f"Mira pours a cup of tea for traveller number {i}, who tells her about the road." for i in range(12)
    ]
    config = RouterTrainingConfig(steps=8, batch_size=4, max_length=32, learning_rate=0.02, top_p=0.4)
    report = train_router(model, tokenizer, texts, config, log=lambda *_: None)
    routers = set(router_parameters(model))
    assert routers and all(not torch.equal(model.state_dict()[k], before[k]) for k in routers)
    for name, value in model.state_dict().items():
        if name not in routers:
            assert torch.equal(value, before[name]), f"{name} changed"
    assert report["mean_before"] == pytest.approx(2.0)
    assert 1.2 <= report["mean_after"] <= 1.8  # the target (1.5) holds it off both 2.0 and collapse to 1.0
    assert len(report["balance_after"]) == len(model.model.layers) and all(
        1.0 <= b <= 4.0 for b in report["balance_after"]
    )


def _module(args, env, timeout=900):
    return subprocess.run(
        [sys.executable, "-m", *args], capture_output=True, text=True, env=env, timeout=timeout
    )


@pytest.mark.slow
def test_the_whole_training_chain_runs_in_smoke_mode(tmp_path, subprocess_env, default_paths):
    result = _module(["training.run_all", "--out", str(tmp_path), "--smoke"], subprocess_env)
    assert result.returncode == 0, result.stderr[-3000:] + result.stdout[-2000:]
    table = (tmp_path / "evaluation.md").read_text()
    assert all(f"| {stage} | heldout |" in table for stage in ("base", "sft", "dpo-r1", "dpo-r2"))
    assert "grounding %" in table and "perplexity (dense base)" in table and "distinct-2" in table
    assert "persona fidelity %" in table and "persona judge:" in result.stdout
    assert "support %" in table and "support judge:" in result.stdout
    scores = json.loads((tmp_path / "evaluation.json").read_text())["scores"]
    for stage in ("base", "sft", "dpo-r1", "dpo-r2"):
        heldout = scores[stage]["heldout"]
        assert (
            heldout["perplexity"]["mean"] > 1
            and heldout["perplexity"]["low"] <= heldout["perplexity"]["high"]
        )
        assert 0 <= heldout["distinct_2"] <= 1
    for stage in ("sft", "dpo/round1", "dpo/round2"):
        assert (tmp_path / stage / "adapter_model.safetensors").is_file()
    summary = json.loads((tmp_path / "dpo" / "summary.json").read_text())
    rounds, settings = summary["rounds"], summary["settings"]
    assert [r["from"] for r in rounds] == [str(tmp_path / "sft"), str(tmp_path / "dpo" / "round1")]
    per_context = settings["samples"] + settings["loop_probe"]  # the loop probe is one reply more
    assert all(
        r["on_policy_pairs"] >= 1 and r["replies"] == settings["contexts"] * per_context for r in rounds
    )


@pytest.mark.slow
def test_router_and_summarizer_scripts_run_in_smoke_mode(tmp_path, subprocess_env, default_paths):
    router = _module(["training.moe.router", "--out", str(tmp_path / "router"), "--smoke"], subprocess_env)
    assert router.returncode == 0, router.stderr[-3000:]
    assert (
        "| mean / sum |" in router.stdout and (tmp_path / "router" / "router_weights.safetensors").is_file()
    )
    summarizer = _module(
        ["training.sft.summarizer", "--out", str(tmp_path / "summ"), "--smoke"], subprocess_env
    )
    assert summarizer.returncode == 0, summarizer.stderr[-3000:]
    assert json.loads(summarizer.stdout.strip().splitlines()[-1])["steps"] == 2


def test_experts_and_a_dense_control_train_on_the_same_tokens_and_the_experts_come_apart(tokenizer, tmp_path):
    from tiny_models import tiny_llama
    from training.moe.experts import ExpertTrainingConfig, compare, report_table

    tiny_llama().save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    config = ExpertTrainingConfig(steps=3, batch_size=2, max_length=48, n_dialogues=6, learning_rate=1e-3)
    report = compare(tmp_path, config, log=lambda *_: None)
    dense, moe = report["dense"], report["moe"]
    assert moe["first_lm"] == pytest.approx(dense["first_lm"], abs=1e-4)  # upcycled: the same model at step 1
    assert dense["last_lm"] != dense["first_lm"] and moe["last_lm"] != moe["first_lm"]
    assert moe["largest_expert_difference"] > 0  # copies no longer
    assert moe["trained_params"] > dense["trained_params"] and 1.0 <= moe["active_mlp"] <= 4.0
    assert len(moe["experts_per_token"]) == len(moe["balance"]) > 0
    assert "| dense control |" in report_table(report) and "| MoE (experts + routers) |" in report_table(
        report
    )
