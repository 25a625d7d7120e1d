"""The `companion` console command: every tool of the project behind one name.

It sits above the other packages (DESIGN §1): it starts the server, runs training jobs
and drives the engine, the memory store and the persona registry; nothing imports it.

Examples:
    companion serve                               # the server with the web demo on http://127.0.0.1:8000
    companion chat --persona mira                 # talk to Mira in the terminal
    companion chat --persona mira --routing top_p --top-p 0.5 --stats
    companion models prepare                      # build the offline default MoE once (safetensors + GGUF)
    companion models info                         # what serves: engine, architecture, experts, routing
    companion models info --engine hf --model ./my-checkpoint   # any local transformers checkpoint
    companion models export-gguf ./my-checkpoint --outtype q8_0  # for the llamacpp engine
    companion memory remember --player p1 --npc mira "I have a really sensitive stomach."
    companion memory search --player p1 --npc mira "I've been craving hotpot"
    companion memory list --player p1 | export --player p1 | forget --player p1 --yes
    companion persona list | show mira | validate my.yaml | new | import card.png | export mira --format v3 --out mira.json
    companion persona train mira --smoke          # a persona's LoRA adapter
    companion train list                          # the training jobs; companion train JOB --help

Heavy libraries (torch, transformers) are imported inside the subcommands, so
`companion --help` answers at once.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

EXIT_USAGE = 2
EXIT_ERROR = 1


def main(argv: Sequence[str] | None = None) -> int:
    if argv is None:  # run as a program: restart once with heap scrubbing (memory/heap_hygiene.py)
        from memory.heap_hygiene import reexec_with_heap_scrubbing

        reexec_with_heap_scrubbing()
    parser = _build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    from companion.errors import CompanionError
    from memory.errors import MemoryLayerError
    from persona_adapters.errors import PersonaError

    _quiet_libraries()
    try:
        return args.handler(args)
    except (CompanionError, PersonaError, MemoryLayerError) as e:
        print(f"companion: error: {e}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        return 130


def _quiet_libraries() -> None:
    """Progress bars and load reports from transformers would drown the chat."""
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # library deprecation notices mid-reply
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()


def _build_parser() -> argparse.ArgumentParser:
    from companion_cli.chat import add_chat_command
    from companion_cli.memories import add_memory_commands
    from companion_cli.models import add_models_commands
    from companion_cli.personas import add_persona_commands
    from companion_cli.serve import add_serve_command
    from companion_cli.train import add_train_commands

    parser = argparse.ArgumentParser(
        prog="companion",
        description="NPC companions with a persona, long-term memory and empathy.",
        epilog="Example: companion serve    (then open http://127.0.0.1:8000/)\n\nMore examples:"
        + __doc__.split("Examples:")[1].split("Heavy libraries")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(title="commands", metavar="COMMAND")
    add_chat_command(sub)
    add_serve_command(sub)
    add_models_commands(sub)
    add_memory_commands(sub)
    add_persona_commands(sub)
    add_train_commands(sub)
    return parser


if __name__ == "__main__":
    sys.exit(main())
