"""Measures of reply quality that a rate of flags cannot see: fluency, variety, grounding, and
the uncertainty of every figure.

- fluency: perplexity of the reply under a frozen reference model (the dense base) given
  the same context, so a trained adapter that writes "Love, love love - ..." scores worse
  than its base, whatever it does to the flags;
- repetition: the share of a reply's word trigrams that repeat an earlier one in it;
- distinct-2: distinct word bigrams over all bigrams of a set of replies (low = samey);
- grounding: a recall reply that carries the recalled fact's own content words, not only
  a template phrase ("didn't you tell me...");
- intervals: Wilson 95% for rates, normal 95% for means.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence

from companion.reflection.postcheck import content_words
from memory.retrieval import fact_key

_WORDS = re.compile(r"[a-z0-9']+")


def words(text: str) -> list[str]:
    return _WORDS.findall(text.lower())


def ngrams(tokens: Sequence[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)]


def distinct_n(replies: Sequence[str], n: int = 2) -> float | None:
    """Distinct n-grams / all n-grams over `replies`; None when there are none."""
    grams = [g for reply in replies for g in ngrams(words(reply), n)]
    return len(set(grams)) / len(grams) if grams else None


def repetition(reply: str, n: int = 3) -> float:
    """The share of the reply's n-grams that already occurred earlier in it (0 = no repeats)."""
    grams = ngrams(words(reply), n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def grounded(reply: str, fact: str) -> bool:
    """True when the reply carries at least half of the fact's content words (at least one)."""
    wanted = content_words(fact_key(fact))
    return bool(wanted) and len(wanted & content_words(reply)) >= max(1, math.ceil(len(wanted) / 2))


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """The Wilson score interval of a rate, as percentages."""
    if n == 0:
        return (0.0, 100.0)
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (100 * max(0.0, centre - half), 100 * min(1.0, centre + half))


def rate(hits: int, n: int) -> dict:
    """A rate in percent with its Wilson 95% interval, each rounded to 0.1, and its n."""
    low, high = wilson(hits, n)
    return {"n": n, "pct": round(100 * hits / max(n, 1), 1), "low": round(low, 1), "high": round(high, 1)}


def mean_interval(values: Sequence[float], z: float = 1.96) -> tuple[float, float, float]:
    """(mean, low, high) with a normal 95% interval of the mean."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return (mean, mean, mean)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    return (mean, mean - z * sd / math.sqrt(n), mean + z * sd / math.sqrt(n))


def completion_nll(
    backbone, messages: list[dict], reply: str, adapter: str | None = None
) -> tuple[float, int]:
    """(summed negative log-likelihood, token count) of `reply` as the assistant's next turn
    after `messages`, under `backbone` (an HFBackbone) with `adapter` active."""
    import torch

    tokenizer = backbone.tokenizer
    prefix = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prefix_ids = tokenizer(prefix, add_special_tokens=False, return_tensors="pt").input_ids
    ids = tokenizer(
        prefix + reply + tokenizer.eos_token, add_special_tokens=False, return_tensors="pt"
    ).input_ids
    with torch.no_grad():
        logits = backbone.model(ids, **backbone.adapters.generate_kwargs([adapter])).logits  # (1, seq, vocab)
    logprobs = torch.log_softmax(logits[0, :-1].float(), dim=-1)  # predicts tokens 1..seq-1
    start = prefix_ids.shape[1] - 1  # the first reply token's position among the predictions
    token_logprobs = logprobs[start:].gather(1, ids[0, 1:][start:, None])[:, 0]
    return -float(token_logprobs.sum()), int(token_logprobs.numel())


def completion_nlls(
    backbone, messages: list[dict], replies: list[str], *, adapter: str | None = None
) -> list[tuple[float, int]]:
    """`completion_nll` of each reply after the same `messages`, with the prompt run once:
    its KV cache is shared by every reply (scored together as one padded batch). `adapter`: the
    name of a loaded adapter to score under (None: the bare backbone, whatever is loaded)."""
    import torch

    tokenizer = backbone.tokenizer
    prefix = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prefix_ids = tokenizer(prefix, add_special_tokens=False, return_tensors="pt").input_ids
    # each reply's tokens as they come after the prefix (tokenized together, so the boundary is the same)
    tails = [
        tokenizer(prefix + reply + tokenizer.eos_token, add_special_tokens=False).input_ids[
            prefix_ids.shape[1] :
        ]
        for reply in replies
    ]
    if not replies:
        return []
    width = max(len(t) for t in tails)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    ids = torch.tensor([t + [pad] * (width - len(t)) for t in tails])
    mask = torch.tensor([[1] * (prefix_ids.shape[1] + len(t)) + [0] * (width - len(t)) for t in tails])

    def under(rows: int) -> dict:
        return backbone.adapters.generate_kwargs([adapter] * rows)

    with torch.no_grad():
        first = backbone.model(prefix_ids, use_cache=True, **under(1))
        cache = first.past_key_values
        cache.batch_repeat_interleave(len(replies))
        logits = backbone.model(ids, attention_mask=mask, past_key_values=cache, **under(len(replies))).logits
    # the last prefix position predicts each reply's first token; reply position i predicts token i + 1
    last = torch.log_softmax(first.logits[0, -1].float(), dim=-1)
    logprobs = torch.log_softmax(logits[:, :-1].float(), dim=-1)
    out = []
    for row, tail in enumerate(tails):
        n = len(tail)
        total = float(last[tail[0]]) + float(logprobs[row, : n - 1].gather(1, ids[row, 1:n, None]).sum())
        out.append((-total, n))
    return out
