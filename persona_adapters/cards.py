"""Character Card V2 / V3 (the role-play community's format): JSON and PNG, in and out.

Import maps a card's `description`, `personality`, `scenario`, `first_mes`,
`mes_example`, `system_prompt` and `character_book` onto persona fields; every other
card field is kept in `card_extras`, and Companion's own fields (id, speaking style,
knowledge domain, refusals, boundaries, adapter) travel in `data.extensions.companion`,
so export round-trips. PNG cards carry the card as base64 JSON in a tEXt chunk named
`chara` (V2) or `ccv3` (V3); this module reads and writes PNG chunks itself.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import struct
import zlib
from pathlib import Path
from typing import Any, Literal

from persona_adapters.errors import InvalidCardError
from persona_adapters.files import parse_json, read_input
from persona_adapters.persona import DialogueLine, Persona, persona_from_dict

CardVersion = Literal["v2", "v3"]
SPECS = {"v2": ("chara_card_v2", "2.0"), "v3": ("chara_card_v3", "3.0")}
PNG_KEYWORDS = {"v2": b"chara", "v3": b"ccv3"}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_MAPPED = {"name", "description", "personality", "scenario", "first_mes", "mes_example", "system_prompt",
           "character_book", "extensions"}  # fmt: skip
_EMPTY = ("", [], {}, None)
_COMPANION_ONLY = ("id", "speaking_style", "knowledge_domain", "must_refuse", "boundaries", "adapter_path")


def slug(name: str) -> str:
    """A persona id from a display name: 'Sam Marlowe' -> 'sam-marlowe'."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:64] or "character"


# ---- dialogue examples --------------------------------------------------------------------


def parse_mes_example(text: str) -> list[list[DialogueLine]]:
    """'<START>\\n{{user}}: hi\\n{{char}}: hello' -> [[player: hi, npc: hello]]."""
    dialogues = []
    for block in re.split(r"<START>", text or "", flags=re.IGNORECASE):
        lines: list[DialogueLine] = []
        for raw in block.strip().splitlines():
            match = re.match(r"^\s*\{\{(user|char)\}\}\s*:\s*(.*)$", raw, flags=re.IGNORECASE)
            if match:
                role = "player" if match.group(1).lower() == "user" else "npc"
                lines.append(DialogueLine(role=role, text=match.group(2).strip()))
            elif raw.strip() and lines:  # a continuation line
                last = lines[-1]
                lines[-1] = DialogueLine(role=last.role, text=f"{last.text}\n{raw.strip()}")
        if lines:
            dialogues.append(lines)
    return dialogues


def render_mes_example(dialogues) -> str:
    blocks = []
    for dialogue in dialogues:
        rows = [f"{{{{{'user' if line.role == 'player' else 'char'}}}}}: {line.text}" for line in dialogue]
        blocks.append("<START>\n" + "\n".join(rows))
    return "\n".join(blocks)


# ---- JSON -------------------------------------------------------------------------------------


def persona_from_card(card: Any, *, source: str = "card", persona_id: str | None = None) -> Persona:
    """A persona from a parsed Character Card (V2 or V3; a V1 card with top-level fields works too).

    Raises:
        InvalidCardError: naming the field that is missing or malformed.
    """
    if not isinstance(card, dict):
        raise InvalidCardError(f"{source}: a card is a JSON object, got {type(card).__name__}.")
    data = card.get("data") if card.get("spec") in ("chara_card_v2", "chara_card_v3") else card
    if not isinstance(data, dict):
        raise InvalidCardError(f"{source}: field 'data' must be an object holding the character.")
    for key in ("name", "description"):
        if not isinstance(data.get(key), str) or not data[key].strip():
            raise InvalidCardError(
                f"{source}: field 'data.{key}' is missing or empty; every card needs a name and a description."
            )
    for key in ("personality", "scenario", "first_mes", "mes_example", "system_prompt"):
        if key in data and not isinstance(data[key], str):
            raise InvalidCardError(
                f"{source}: field 'data.{key}' must be text, got {type(data[key]).__name__}."
            )
    extensions = data.get("extensions") or {}
    if not isinstance(extensions, dict):
        raise InvalidCardError(f"{source}: field 'data.extensions' must be an object.")
    ours = dict(extensions.get("companion") or {})
    lore = _lorebook_from_card(data.get("character_book"), source)
    # Empty defaults carry nothing and export writes them back; keeping them would make a
    # persona that went out and came back differ from itself.
    extras = {k: v for k, v in data.items() if k not in _MAPPED and v not in _EMPTY}
    other_extensions = {k: v for k, v in extensions.items() if k != "companion"}
    if other_extensions:
        extras["extensions"] = other_extensions
    if isinstance(data.get("character_book"), dict):
        book_extras = {k: v for k, v in data["character_book"].items() if k != "entries" and v not in _EMPTY}
        if book_extras:
            extras["character_book"] = book_extras
    fields = {
        "id": persona_id or ours.pop("id", None) or slug(data["name"]),
        "name": data["name"],
        "description": data["description"],
        "personality": data.get("personality", ""),
        "scenario": data.get("scenario", ""),
        "first_message": data.get("first_mes", ""),
        "system_prompt": data.get("system_prompt", ""),
        "example_dialogues": [
            [{line.role: line.text} for line in d] for d in parse_mes_example(data.get("mes_example", ""))
        ],
        "lorebook": lore,
        "card_extras": extras,
    }
    fields.update({k: v for k, v in ours.items() if k in _COMPANION_ONLY and k != "id"})
    return persona_from_dict(fields, source=source)


def _lorebook_from_card(book: Any, source: str) -> list[dict]:
    if book in (None, {}):
        return []
    if not isinstance(book, dict) or not isinstance(book.get("entries", []), list):
        raise InvalidCardError(
            f"{source}: field 'data.character_book' must be an object with an 'entries' list."
        )
    entries = []
    for i, entry in enumerate(book.get("entries", [])):
        if (
            not isinstance(entry, dict)
            or not isinstance(entry.get("keys"), list)
            or not isinstance(entry.get("content"), str)
        ):
            raise InvalidCardError(
                f"{source}: field 'data.character_book.entries[{i}]' needs 'keys' (a list) and 'content' (text)."
            )
        if entry.get("enabled", True) and entry["keys"] and entry["content"].strip():
            entries.append({"keys": [str(k) for k in entry["keys"]], "content": entry["content"]})
    return entries


def card_from_persona(persona: Persona, version: CardVersion = "v2") -> dict[str, Any]:
    """The persona as a Character Card dict of the given version."""
    spec, spec_version = SPECS[version]
    extras = dict(persona.card_extras)
    book_extras = extras.pop("character_book", {})
    extensions = dict(extras.pop("extensions", {}))
    ours = {k: getattr(persona, k) for k in _COMPANION_ONLY if getattr(persona, k)}
    ours = {k: list(v) if isinstance(v, tuple) else v for k, v in ours.items()}
    extensions["companion"] = ours
    data: dict[str, Any] = {
        "name": persona.name,
        "description": persona.description,
        "personality": persona.personality,
        "scenario": persona.scenario,
        "first_mes": persona.first_message,
        "mes_example": render_mes_example(persona.example_dialogues),
        "system_prompt": persona.system_prompt,
    }
    defaults = {"creator_notes": "", "post_history_instructions": "", "alternate_greetings": [], "tags": [],
                "creator": "", "character_version": ""}  # fmt: skip
    if version == "v3":
        defaults |= {"group_only_greetings": [], "assets": []}
    data |= defaults | extras
    if persona.lorebook or book_extras:
        entries = [
            {
                "keys": list(e.keys),
                "content": e.content,
                "extensions": {},
                "enabled": True,
                "insertion_order": i,
            }
            for i, e in enumerate(persona.lorebook)
        ]
        data["character_book"] = {
            **book_extras,
            "extensions": book_extras.get("extensions", {}),
            "entries": entries,
        }
    data["extensions"] = extensions
    return {"spec": spec, "spec_version": spec_version, "data": data}


def read_card(path: str | Path, *, persona_id: str | None = None) -> Persona:
    """A persona from a character card file, PNG or JSON (told apart by the PNG signature).

    Raises:
        InvalidCardError: the file is missing, too large, or not a valid card; one line says which.
    """
    raw = read_input(path, what="character card", error=InvalidCardError)
    if raw.startswith(PNG_SIGNATURE):
        return _card_from_png(raw, str(path), persona_id=persona_id)
    return _card_from_json(raw, str(path), persona_id=persona_id)


def read_card_json(path: str | Path, *, persona_id: str | None = None) -> Persona:
    raw = read_input(path, what="character card", error=InvalidCardError)
    return _card_from_json(raw, str(path), persona_id=persona_id)


def _card_from_json(raw: bytes, source: str, *, persona_id: str | None) -> Persona:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise InvalidCardError(
            f"{source}: not a character card: neither a PNG card nor UTF-8 JSON (bad byte at {e.start})."
        ) from e
    card = parse_json(text, source, error=InvalidCardError)
    return persona_from_card(card, source=source, persona_id=persona_id)


def write_card_json(persona: Persona, path: str | Path, version: CardVersion = "v2") -> Path:
    path = Path(path)
    path.write_text(
        json.dumps(card_from_persona(persona, version), indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    return path


# ---- PNG ------------------------------------------------------------------------------------------


def _chunks(png: bytes, source: str) -> list[tuple[bytes, bytes]]:
    if not png.startswith(PNG_SIGNATURE):
        raise InvalidCardError(f"{source}: not a PNG file.")
    chunks, offset = [], len(PNG_SIGNATURE)
    while offset + 8 <= len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        chunks.append((kind, png[offset + 8 : offset + 8 + length]))
        offset += 12 + length
        if kind == b"IEND":
            break
    return chunks


def _chunk(kind: bytes, data: bytes) -> bytes:
    return (
        struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    )


def read_card_png(path: str | Path, *, persona_id: str | None = None) -> Persona:
    """A persona from a PNG card (a V3 `ccv3` chunk wins over a V2 `chara` chunk)."""
    raw = read_input(path, what="character card", error=InvalidCardError)
    return _card_from_png(raw, str(path), persona_id=persona_id)


def _card_from_png(png: bytes, path: str, *, persona_id: str | None) -> Persona:
    texts = {}
    for kind, data in _chunks(png, path):
        if kind == b"tEXt" and b"\x00" in data:
            keyword, value = data.split(b"\x00", 1)
            texts[keyword] = value
    raw = texts.get(b"ccv3") or texts.get(b"chara")
    if raw is None:
        raise InvalidCardError(
            f"{path}: the PNG has no 'chara' or 'ccv3' text chunk; it is a picture, not a character card."
        )
    try:
        decoded = base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError) as e:
        raise InvalidCardError(f"{path}: the card chunk is not base64-encoded JSON ({e}).") from e
    card = parse_json(decoded, f"{path} (card chunk)", error=InvalidCardError)
    return persona_from_card(card, source=path, persona_id=persona_id)


def write_card_png(persona: Persona, path: str | Path, *, image: str | Path | None = None) -> Path:
    """Writes a PNG card with both a V2 `chara` and a V3 `ccv3` chunk, on `image` or a plain tile."""
    png = Path(image).read_bytes() if image else _plain_png()
    chunks = [
        (k, d)
        for k, d in _chunks(png, str(image or "image"))
        if not (k == b"tEXt" and d.split(b"\x00", 1)[0] in (b"chara", b"ccv3"))
    ]
    texts = [
        (
            b"tEXt",
            keyword
            + b"\x00"
            + base64.b64encode(json.dumps(card_from_persona(persona, version)).encode("utf-8")),
        )
        for version, keyword in PNG_KEYWORDS.items()
    ]
    out = chunks[:-1] + texts + chunks[-1:]  # before IEND
    path = Path(path)
    path.write_bytes(PNG_SIGNATURE + b"".join(_chunk(k, d) for k, d in out))
    return path


def _plain_png(size: int = 64, rgb: tuple[int, int, int] = (120, 78, 46)) -> bytes:
    row = b"\x00" + bytes(rgb) * size
    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    return (
        PNG_SIGNATURE
        + _chunk(b"IHDR", header)
        + _chunk(b"IDAT", zlib.compress(row * size))
        + _chunk(b"IEND", b"")
    )
