"""Trains the reflection module's emotion classifier; writes companion/weights/emotion.npz.

    python -m training.train_emotion            # 300 lines per label
    python -m training.train_emotion --smoke    # 40 per label, seconds

A softmax layer over frozen all-MiniLM-L6-v2 embeddings, trained on
`training.emotion_data` (written for this project).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from companion.reflection.emotion import EMOTIONS, WEIGHTS_PATH
from memory.embedding import MiniLMEmbedder
from training.emotion_data import build_dataset
from training.linear_classifier import fit_and_save


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--smoke", action="store_true")
    parser.add_argument("--per-class", type=int, default=300)
    parser.add_argument("--l2", type=float, default=1e-4)
    parser.add_argument("--epochs", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=WEIGHTS_PATH)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = build_dataset(40 if args.smoke else args.per_class, seed=args.seed)
    accuracy = fit_and_save(
        rows,
        list(EMOTIONS),
        MiniLMEmbedder(cache_size=0),
        args.out,
        l2=args.l2,
        epochs=args.epochs,
        seed=args.seed,
    )
    print(
        f"trained on {len(rows)} lines in {time.perf_counter() - started:.1f} s; train accuracy {accuracy:.3f}"
    )
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
