"""Unlikelihood on the policy's own loops (Welleck et al. 2020, "Neural Text Generation with
Unlikelihood Training"), a short pass after a DPO round.

DPO lowers a looping reply's likelihood as a whole, spread over every token of it, the fluent
start it may share with the chosen reply included. This pass aims at the loop itself: for each
reply the round sampled that repeats itself, every token of an n-gram that already occurred
earlier in the reply gets the loss -log(1 - p(token | what came before)), which pushes down
exactly the step that continues the loop. The context's best reply is kept up beside it (its
mean per-token NLL at `anchor_weight`), so the pass does not buy shorter loops with worse
replies. Only the adapter's weights change.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from companion.errors import ConfigError
from companion.yaml_config import YamlConfig
from training.common import check, check_counts, write_json
from training.sft.lora import load_model


class NothingToUnlearn(ConfigError):
    """None of the replies given to the pass repeats a token n-gram."""


@dataclass(frozen=True)
class UnlikelihoodConfig(YamlConfig):
    steps: int = 24  # each step: `batch_size` looping replies and their contexts' best replies
    max_passes: int = 0  # at most this many passes over the loops (0 = no cap): few loops, few steps
    batch_size: int = 2
    learning_rate: float = 5e-5
    anchor_weight: float = 1.0  # weight of the best replies' mean per-token NLL
    n: int = 4  # token n-grams that count as a repeat (a word 3-gram is 3 to 5 tokens)
    max_length: int = 640
    seed: int = 0

    def __post_init__(self) -> None:
        check_counts(self, "steps", "batch_size", "max_length")
        check(self.n >= 1, f"n is {self.n}; expected >= 1 (4 is usual).")
        check(self.anchor_weight >= 0, f"anchor_weight is {self.anchor_weight}; expected >= 0.")
        check(self.max_passes >= 0, f"max_passes is {self.max_passes}; expected >= 0 (0 = no cap).")

    def steps_for(self, n_loops: int) -> int:
        """Steps over `n_loops` looping replies: `steps`, or fewer under `max_passes`."""
        if not self.max_passes:
            return self.steps
        return min(self.steps, self.max_passes * -(-n_loops // self.batch_size))


def repeated_positions(ids: Sequence[int], n: int = 4) -> list[int]:
    """Indexes of the tokens of `ids` that belong to an n-gram already seen earlier in it
    (every token of the repeat, so the step that starts a loop is among them)."""
    seen: set[tuple[int, ...]] = set()
    marked: set[int] = set()
    for end in range(n - 1, len(ids)):
        gram = tuple(ids[end - n + 1 : end + 1])
        if gram in seen:
            marked.update(range(end - n + 1, end + 1))
        seen.add(gram)
    return sorted(marked)


def _encode(tokenizer, prompt: list[dict], reply: str, max_length: int) -> tuple[list[int], int]:
    """(prompt + reply token ids, where the reply starts); the prompt is cut from the left."""
    head = tokenizer.apply_chat_template(prompt, tokenize=False, add_generation_prompt=True)
    prompt_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
    reply_ids = tokenizer(reply, add_special_tokens=False)["input_ids"][: max_length // 2]
    prompt_ids = prompt_ids[-(max_length - len(reply_ids)) :]
    return prompt_ids + reply_ids, len(prompt_ids)


def _reply_logp(policy, ids: list[int], start: int):
    """The log-probability of each reply token given what came before, in one forward pass."""
    import torch

    logits = policy(input_ids=torch.tensor([ids])).logits[0, start - 1 : len(ids) - 1]
    return torch.log_softmax(logits.float(), dim=-1).gather(1, torch.tensor(ids[start:])[:, None])[:, 0]


def train_unlikelihood(
    rows: list[dict],
    adapter: Path,
    out: Path,
    *,
    model_dir: str | Path,
    settings: UnlikelihoodConfig,
    model=None,
) -> dict:
    """Trains `adapter` on `rows` ({"prompt": messages, "reply": a reply that repeats itself,
    "anchor": the same context's best reply or None}), saves it to `out` and returns a
    summary (the mean probability of the repeated tokens before and after).

    Args:
        model: an already loaded base model (tests pass a tiny one); else from `model_dir`.
    """
    import torch
    from peft import PeftModel
    from transformers import AutoTokenizer

    if model is None:
        model, tokenizer = load_model(model_dir)
    else:
        tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    encoded, marks, kept = [], [], []  # a looping reply, its repeated tokens, its anchor
    for r in rows:
        ids, start = _encode(tokenizer, r["prompt"], r["reply"], settings.max_length)
        if repeated := repeated_positions(ids[start:], settings.n):
            encoded.append((ids, start))
            marks.append(repeated)
            kept.append(
                _encode(tokenizer, r["prompt"], r["anchor"], settings.max_length) if r.get("anchor") else None
            )
    if not encoded:
        raise NothingToUnlearn(
            f"none of the {len(rows)} replies repeats a token {settings.n}-gram; nothing to unlearn."
        )
    torch.manual_seed(settings.seed)
    policy = PeftModel.from_pretrained(model, str(adapter), is_trainable=True)
    optimizer = torch.optim.AdamW(
        [p for p in policy.parameters() if p.requires_grad], lr=settings.learning_rate
    )

    def repeat_probability() -> float:  # the mean probability of a repeated token
        with torch.no_grad():
            ps = [_reply_logp(policy, *e)[m].exp() for e, m in zip(encoded, marks, strict=True)]
        return float(torch.cat(ps).mean())

    before = repeat_probability()
    policy.train()
    losses = []
    started = time.perf_counter()
    steps = settings.steps_for(len(encoded))
    for step in range(steps):
        optimizer.zero_grad()
        total = 0.0
        for k in range(settings.batch_size):
            i = (step * settings.batch_size + k) % len(encoded)
            p = _reply_logp(policy, *encoded[i])[marks[i]].exp()
            loss = -torch.log((1 - p).clamp_min(1e-5)).mean()
            if kept[i] and settings.anchor_weight:
                loss = loss - settings.anchor_weight * _reply_logp(policy, *kept[i]).mean()
            (loss / settings.batch_size).backward()
            total += float(loss.detach()) / settings.batch_size
        optimizer.step()
        losses.append(round(total, 4))
    seconds = time.perf_counter() - started
    policy.eval()
    after = repeat_probability()
    out.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(str(out), selected_adapters=["default"])
    summary = {
        "loops": len(encoded),
        "anchors": sum(k is not None for k in kept),
        "steps": steps,
        "seconds": round(seconds, 1),
        "first_loss": losses[0],
        "last_loss": losses[-1],
        "repeat_p_before": float(f"{before:.4g}"),
        "repeat_p_after": float(f"{after:.4g}"),
        "settings": asdict(settings),
        "adapter": str(adapter),
    }
    write_json(out / "unlikelihood_summary.json", summary)
    return summary
