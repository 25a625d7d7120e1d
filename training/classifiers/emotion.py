"""Trains the reflection module's emotion classifier; writes companion/weights/emotion.npz.

    python -m training.classifiers.emotion            # 300 lines per label
    python -m training.classifiers.emotion --smoke    # 40 per label, seconds

A softmax layer over frozen all-MiniLM-L6-v2 embeddings, trained on
`training.data.emotion_examples` (written for this project).
"""

from __future__ import annotations

import time

from companion.reflection.emotion import EMOTIONS, WEIGHTS_PATH
from memory.embedding import MiniLMEmbedder
from training.classifiers.linear import classifier_parser, examples_per_class, fit_and_save
from training.common import run
from training.data.emotion_examples import build_dataset


def main(argv: list[str] | None = None) -> None:
    parser = classifier_parser(__doc__, per_class=300, smoke_per_class=40, out=WEIGHTS_PATH)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    rows = build_dataset(examples_per_class(args), seed=args.seed)
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
    raise SystemExit(run(main))
