"""SFT of the generative summarizer's LoRA adapter (memory.generative_summarizer's adapter slot).

    python -m training.sft.summarizer --out adapters/summarizer                  # configs/sft_summarizer.yaml
    python -m training.sft.summarizer --out /tmp/summarizer --smoke --eval 20     # 2 steps, F1 on 20 dev lines

Rows: the summarizer's own prompt (memory.generative_summarizer.build_messages) for a
player turn of one or two sentences from the template data built for this project
(training/data/summarizer_examples.py, the fast summarizer's data), and as completion the JSON
array of events those sentences carry (type, third-person content, importance; [] for
chit-chat). With --eval N, macro-F1 of event types on N lines of the hand-written dev
set (training/evaluation/data/memory_dev_set.jsonl) is printed for the bare backbone and the adapter.
"""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from companion.backbone.provision import prepare_default_model
from memory.events import DEFAULT_IMPORTANCE, EventType, Turn
from memory.generative_summarizer import build_messages
from memory.rewrite import to_third_person
from training.common import CONFIGS, job_parser, load_config, print_summary, run
from training.data.summarizer_examples import build_dataset
from training.sft.lora import SUMMARY_KEYS, LoraSFTConfig, train_lora_sft

CONFIG = CONFIGS / "sft_summarizer.yaml"


def summarizer_rows(n: int, seed: int = 0) -> list[dict]:
    """n prompt-completion rows; about one in four turns carries two sentences."""
    rng = random.Random(seed)
    pool = build_dataset(n_per_class=max(8, n // 6), seed=seed)
    rows = []
    while len(rows) < n and pool:
        k = 2 if rng.random() < 0.25 and len(pool) > 1 else 1
        picked, pool = pool[:k], pool[k:]
        events = [
            {
                "type": label,
                "content": to_third_person(text),
                "importance": DEFAULT_IMPORTANCE[EventType(label)],
            }
            for text, label in picked
            if label != "none"
        ]
        turn = Turn(role="player", text=" ".join(text for text, _ in picked))
        rows.append(
            {
                "prompt": build_messages([turn]),
                "completion": [{"role": "assistant", "content": json.dumps(events)}],
            }
        )
    return rows


def type_f1(model_dir: Path, adapter: Path | None, n: int) -> float:
    """Macro-F1 of event types (plus "none") over n dev-set lines, greedy."""
    from companion.backbone import BackboneConfig, HFBackbone
    from companion.text_generator import BackboneTextGenerator
    from memory.generative_summarizer import GenerativeSummarizer
    from training.classifiers.fast_summarizer import load_dev_set

    backbone = HFBackbone.from_config(BackboneConfig(model=str(model_dir)))
    if adapter is not None:
        backbone.adapters.load("summarizer", adapter)
    summarizer = GenerativeSummarizer(
        BackboneTextGenerator(backbone), adapter="summarizer" if adapter else None
    )
    labels = [label for _, label in load_dev_set()[:n]]
    predicted = []
    for text, _ in load_dev_set()[:n]:
        drafts = asyncio.run(summarizer.summarize([Turn(role="player", text=text)]))
        predicted.append(str(drafts[0].type) if drafts else "none")
    backbone.close()
    scores = []
    for label in sorted(set(labels) | set(predicted)):
        tp = sum(p == label == g for p, g in zip(predicted, labels, strict=True))
        fp = sum(p == label != g for p, g in zip(predicted, labels, strict=True))
        fn = sum(g == label != p for p, g in zip(predicted, labels, strict=True))
        scores.append(2 * tp / (2 * tp + fp + fn) if tp else 0.0)
    return sum(scores) / len(scores)


def main(argv: list[str] | None = None) -> None:
    parser = job_parser(__doc__, config=CONFIG, smoke="2 short steps on 16 rows")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=600)
    parser.add_argument("--eval", type=int, default=0, help="dev-set lines for the F1 before/after")
    args = parser.parse_args(argv)
    config = load_config(LoraSFTConfig, args, steps=2, batch_size=2, max_length=512)
    n_rows = 16 if args.smoke else args.rows
    model_dir = prepare_default_model().moe_dir
    summary = train_lora_sft(
        summarizer_rows(n_rows, config.seed), args.out, model_dir=model_dir, config=config
    )
    result = {k: summary[k] for k in SUMMARY_KEYS}
    if args.eval:
        result["type_macro_f1_bare"] = round(type_f1(model_dir, None, args.eval), 3)
        result["type_macro_f1_adapter"] = round(type_f1(model_dir, args.out, args.eval), 3)
    print_summary(result)


if __name__ == "__main__":
    raise SystemExit(run(main))
