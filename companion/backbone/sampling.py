"""Next-token choice from one row of logits, with transformers' semantics, in NumPy.

Engines that get raw logits (llama.cpp) pick tokens here, so that `GenerationParams`
mean the same thing on every engine: the repetition penalty of CTRL (Keskar et al. 2019)
as transformers applies it (every token of prompt and reply, logit / p when positive,
* p when negative), then temperature, then nucleus (top-p) filtering; temperature 0 is
greedy. A greedy decode therefore picks the same tokens as `HFBackbone` given the same
logits.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

# Nucleus sampling looks at the most probable tokens only: sorting a 49k vocabulary for
# every token of every player costs more than the rest of sampling. Candidates past the
# 1,024 most probable carry a vanishing share of the mass after a top-p cut of <= 0.99.
_NUCLEUS_CANDIDATES = 1024


def apply_repetition_penalty(logits: np.ndarray, seen: Iterable[int], penalty: float) -> np.ndarray:
    """Penalises tokens already in the context, as transformers' RepetitionPenaltyLogitsProcessor.

    Args:
        logits: (vocab,) float32 scores of the next token.
        seen: token ids of the prompt and the reply so far.
        penalty: >= 1; 1 leaves the logits as they are.

    Returns:
        A new (vocab,) array.
    """
    out = np.array(logits, dtype=np.float32, copy=True)
    if penalty == 1.0:
        return out
    ids = np.fromiter(set(seen), dtype=np.int64)
    if ids.size:
        picked = out[ids]
        out[ids] = np.where(picked < 0, picked * penalty, picked / penalty)
    return out


def nucleus_probabilities(
    logits: np.ndarray, temperature: float, top_p: float
) -> tuple[np.ndarray, np.ndarray]:
    """The tokens nucleus sampling keeps and their renormalised probabilities.

    Args:
        logits: (vocab,) scores after any penalty.
        temperature: > 0.
        top_p: keep the smallest set of most probable tokens whose mass reaches top_p
            (at least one token), in (0, 1].

    Returns:
        (token ids, probabilities), both (n_kept,), probabilities summing to 1.
    """
    scaled = logits.astype(np.float64) / temperature
    n = min(_NUCLEUS_CANDIDATES, scaled.size)
    candidates = np.argpartition(-scaled, n - 1)[:n] if n < scaled.size else np.arange(scaled.size)
    candidates = candidates[np.argsort(-scaled[candidates], kind="stable")]
    # softmax over the whole vocabulary: the tail's mass still counts toward top_p
    shifted = np.exp(scaled - scaled[candidates[0]])
    probs = shifted[candidates] / shifted.sum()
    cumulative = np.cumsum(probs)
    n_kept = int(np.searchsorted(cumulative, top_p, side="left")) + 1
    kept = candidates[: min(n_kept, n)]
    kept_probs = probs[: kept.size]
    return kept, kept_probs / kept_probs.sum()


def choose_token(
    logits: np.ndarray,
    *,
    seen: Iterable[int],
    temperature: float,
    top_p: float,
    repetition_penalty: float,
    rng: np.random.Generator,
    banned: Iterable[int] = (),
) -> int:
    """The next token: greedy when temperature is 0, else sampled from the nucleus.

    Args:
        logits: (vocab,) raw scores from the model.
        seen: prompt and reply token ids (for the repetition penalty).
        temperature: 0 for greedy.
        top_p: nucleus threshold.
        repetition_penalty: >= 1.
        rng: the sequence's own generator (a seed makes a reply reproducible).
        banned: ids that must not be picked now (end-of-sequence before min_new_tokens).
    """
    scores = apply_repetition_penalty(logits, seen, repetition_penalty)
    for token in banned:
        scores[token] = -np.inf
    if temperature == 0:
        return int(np.argmax(scores))
    ids, probs = nucleus_probabilities(scores, temperature, top_p)
    return int(ids[rng.choice(ids.size, p=probs)])
