"""`companion persona ...`: author, check, list, show, import and export personas."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from companion.paths import default_data_dir


def add_persona_commands(sub: argparse._SubParsersAction) -> None:
    persona = sub.add_parser(
        "persona",
        help="create, validate, list, show, import and export personas",
        description="Author NPC personas (YAML) and exchange them as Character Cards (V2/V3 JSON, PNG).",
        epilog="Example: companion persona list",
    )
    commands = persona.add_subparsers(title="persona commands", metavar="COMMAND")

    def command(name: str, handler, help_text: str, example: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, description=help_text[:1].upper() + help_text[1:] + ".",
                                epilog=f"Example: {example}")  # fmt: skip
        p.add_argument(
            "--data-dir", default=None, help="data directory; user personas live in its personas/ folder"
        )
        p.set_defaults(handler=handler)
        return p

    p = command("list", _list, "list the personas the server and chat offer", "companion persona list")
    p = command("show", _show, "print a persona as YAML", "companion persona show mira")
    p.add_argument("id")
    p = command("validate", _validate, "check persona YAML files and say what is wrong",
                "companion persona validate my-npc.yaml")  # fmt: skip
    p.add_argument("files", nargs="+", type=Path)
    p = command("new", _new, "create a persona (asks for what the flags leave out, when run in a terminal)",
                'companion persona new --id bram --name Bram --description "Bram is the village smith."')  # fmt: skip
    for flag in ("id", "name", "description", "personality", "speaking-style", "scenario", "first-message",
                 "knowledge-domain"):  # fmt: skip
        p.add_argument(f"--{flag}", default=None)
    p.add_argument("--must-refuse", action="append", default=None, help="an out-of-world thing (repeatable)")
    p.add_argument(
        "--out", type=Path, default=None, help="file to write (default: <data dir>/personas/<id>.yaml)"
    )
    p = command("import", _import, "import a Character Card (V2/V3 JSON or PNG) as a persona",
                "companion persona import seraphina.png --id seraphina")  # fmt: skip
    p.add_argument("file", type=Path)
    p.add_argument("--id", default=None, help="persona id (default: from the card's name)")
    p.add_argument(
        "--out", type=Path, default=None, help="file to write (default: <data dir>/personas/<id>.yaml)"
    )
    p = command("train", _train, "train the persona's LoRA adapter (TRL SFT on its example dialogues)",
                "companion persona train mira --smoke")  # fmt: skip
    p.add_argument("id")
    p.add_argument("--smoke", action="store_true", help="4 steps, about a minute on a CPU")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: 24)")
    p.add_argument(
        "--out", type=Path, default=None, help="adapter folder (default: <data dir>/adapters/<id>)"
    )
    p = command("export", _export, "export a persona as a Character Card",
                "companion persona export mira --format png --out mira.png")  # fmt: skip
    p.add_argument("id")
    p.add_argument("--format", choices=("v2", "v3", "png"), default="v2")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--image", type=Path, default=None, help="for png: the picture to embed the card in")


def _registry(args: argparse.Namespace):
    from persona_adapters import PersonaRegistry

    return PersonaRegistry.default(args.data_dir or default_data_dir())


def _user_file(args: argparse.Namespace, persona_id: str) -> Path:
    return args.out or Path(args.data_dir or default_data_dir()) / "personas" / f"{persona_id}.yaml"


def _list(args: argparse.Namespace) -> int:
    registry = _registry(args)
    for persona in registry.all():
        adapter = "adapter" if registry.adapter_dir(persona.id) else "no adapter"
        print(f"{persona.id:12s} {persona.name:20s} {adapter:10s} {registry.file_of(persona.id)}")
    return 0


def _show(args: argparse.Namespace) -> int:
    import yaml

    print(
        yaml.safe_dump(
            _registry(args).get(args.id).to_dict(), sort_keys=False, allow_unicode=True, width=100
        ),
        end="",
    )
    return 0


def _validate(args: argparse.Namespace) -> int:
    from persona_adapters import load_persona
    from persona_adapters.errors import PersonaError

    failed = 0
    for path in args.files:
        try:
            persona = load_persona(path)
            print(f"ok      {path}  ({persona.id}: {persona.name})")
        except PersonaError as e:
            failed += 1
            print(f"invalid {e}", file=sys.stderr)
    return 1 if failed else 0


def _new(args: argparse.Namespace) -> int:
    from persona_adapters import persona_from_dict, save_persona

    asked = {}
    for key in ("id", "name", "description", "personality", "speaking_style", "scenario", "first_message",
                "knowledge_domain"):  # fmt: skip
        value = getattr(args, key)
        if value is None and sys.stdin.isatty():
            value = input(f"{key.replace('_', ' ')}: ").strip()
        asked[key] = value or ""
    asked["must_refuse"] = args.must_refuse or []
    persona = persona_from_dict({k: v for k, v in asked.items() if v}, source="new persona")
    path = save_persona(persona, _user_file(args, persona.id))
    print(f"wrote {path}")
    return 0


def _import(args: argparse.Namespace) -> int:
    from persona_adapters import save_persona
    from persona_adapters.cards import read_card

    persona = read_card(args.file, persona_id=args.id)
    path = save_persona(persona, _user_file(args, persona.id))
    print(f"imported {persona.name} as {persona.id}: {path}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from persona_adapters.cards import write_card_json, write_card_png

    persona = _registry(args).get(args.id)
    if args.format == "png":
        write_card_png(persona, args.out, image=args.image)
    else:
        write_card_json(persona, args.out, version=args.format)
    print(f"exported {persona.id} as {args.format}: {args.out}")
    return 0


def _train(args: argparse.Namespace) -> int:
    """Runs training.sft.persona in a child process (training holds a model in memory, the
    child returns it all), then points a user copy of the persona at the new adapter."""
    import dataclasses
    import subprocess

    from persona_adapters import save_persona
    from training.sft import persona as sft_persona

    registry = _registry(args)
    persona = registry.get(args.id)
    data_dir = Path(args.data_dir or default_data_dir())
    out = (args.out or data_dir / "adapters" / persona.id).resolve()
    command = [
        sys.executable,
        "-m",
        sft_persona.__name__,
        persona.id,
        "--out",
        str(out),
        "--data-dir",
        str(data_dir),
    ]
    command += ["--smoke"] if args.smoke else ["--steps", str(args.steps)] if args.steps else []
    if subprocess.run(command).returncode != 0:
        print("companion: error: training failed; see the messages above.", file=sys.stderr)
        return 1
    target = data_dir / "personas" / f"{persona.id}.yaml"
    relative = Path(os.path.relpath(out, target.parent))
    save_persona(dataclasses.replace(persona, adapter_path=str(relative)), target)
    print(f"adapter of {persona.id} in {out}; {target} now points to it")
    return 0
