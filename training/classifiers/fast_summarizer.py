"""Trains the fast summarizer's classifier and writes memory/weights/fast_summarizer.npz.

    python -m training.classifiers.fast_summarizer                 # full: 400 examples per class
    python -m training.classifiers.fast_summarizer --smoke         # 60 per class, a few seconds
    python -m training.classifiers.fast_summarizer --out /tmp/w.npz

The data comes from `training.data.summarizer_examples` (templates written for this project);
nothing is downloaded. A softmax layer over frozen all-MiniLM-L6-v2 embeddings, trained
full-batch with L2 regularisation; it prints training accuracy and, when the dev set
is there, per-class precision/recall and macro-F1 on it.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from memory.embedding import MiniLMEmbedder
from memory.events import EVENT_TYPES
from memory.fast_summarizer import NONE, WEIGHTS_PATH
from training.classifiers.linear import classifier_parser, examples_per_class, fit_and_save, per_class_report
from training.common import EVAL_DATA, run
from training.data.summarizer_examples import build_dataset

LABELS = [*EVENT_TYPES, NONE]
DEV_SET = EVAL_DATA / "memory_dev_set.jsonl"


def load_dev_set(path: Path = DEV_SET) -> list[tuple[str, str]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    return [(r["text"], r["label"]) for r in rows]


def main(argv: list[str] | None = None) -> None:
    parser = classifier_parser(__doc__, per_class=400, smoke_per_class=60, out=WEIGHTS_PATH)
    args = parser.parse_args(argv)
    per_class = examples_per_class(args)

    started = time.perf_counter()
    rows = build_dataset(per_class, seed=args.seed)
    embedder = MiniLMEmbedder(cache_size=0)
    train_acc = fit_and_save(rows, LABELS, embedder, args.out, l2=args.l2, epochs=args.epochs, seed=args.seed)
    print(
        f"trained on {len(rows)} sentences in {time.perf_counter() - started:.1f} s; train accuracy {train_acc:.3f}"
    )
    print(f"wrote {args.out} ({args.out.stat().st_size / 1024:.1f} kB)")
    if DEV_SET.is_file():
        from memory.fast_summarizer import FastSummarizer

        summarizer = FastSummarizer(embedder, weights_path=args.out)
        dev = load_dev_set()
        predicted = [label for label, _ in summarizer.classify([t for t, _ in dev])]
        report = per_class_report([g for _, g in dev], predicted, LABELS)
        for label in LABELS:
            r = report[label]
            print(f"  {label:15s} precision {r['precision']:.2f}  recall {r['recall']:.2f}  f1 {r['f1']:.2f}")
        print(f"dev macro-F1 {report['macro_f1']['f1']:.3f}")


if __name__ == "__main__":
    raise SystemExit(run(main))
