"""Personas: YAML schema and validation, Character Card V2/V3 JSON and PNG, the registry."""

import copy
import json

import pytest
import yaml

from companion.prompting import build_messages
from persona_adapters import PersonaRegistry, load_persona, save_persona
from persona_adapters.cards import (
    card_from_persona,
    persona_from_card,
    read_card_json,
    read_card_png,
    write_card_json,
    write_card_png,
)
from persona_adapters.errors import InvalidCardError, InvalidPersonaError, UnknownPersonaError
from persona_adapters.registry import BUNDLED_DIR


def test_three_bundled_personas_validate_with_distinct_voices_and_domains():
    registry = PersonaRegistry([BUNDLED_DIR])
    personas = registry.all()
    assert [p.id for p in personas] == ["marlowe", "mira", "orla"]
    assert len({p.speaking_style for p in personas}) == 3 and len({p.knowledge_domain for p in personas}) == 3
    for p in personas:
        assert p.first_message and p.example_dialogues and p.must_refuse and p.lorebook


def _card(version: str) -> dict:
    spec, spec_version = {"v2": ("chara_card_v2", "2.0"), "v3": ("chara_card_v3", "3.0")}[version]
    data = {
        "name": "Seraphina",
        "description": "Seraphina is a forest guardian who heals lost travellers.",
        "personality": "gentle, wise, protective",
        "scenario": "A glade in the Eldoria forest at dusk.",
        "first_mes": "*Seraphina kneels beside you.* You're safe now, traveller.",
        "mes_example": "<START>\n{{user}}: Where am I?\n{{char}}: In my glade, little one. Rest.\n<START>\n{{user}}: Who are you?\n{{char}}: Seraphina, guardian of these woods.",
        "system_prompt": "Write in third person, with actions in asterisks.",
        "creator_notes": "Best with a slow burn.",
        "post_history_instructions": "",
        "alternate_greetings": ["*The trees part.* Welcome back."],
        "tags": ["fantasy", "healer"],
        "creator": "someone",
        "character_version": "1.2",
        "character_book": {
            "name": "Eldoria",
            "scan_depth": 4,
            "extensions": {},
            "entries": [
                {
                    "keys": ["Eldoria"],
                    "content": "Eldoria is an ancient forest full of spirits.",
                    "extensions": {},
                    "enabled": True,
                    "insertion_order": 0,
                }
            ],
        },
        "extensions": {"depth_prompt": {"prompt": "Stay gentle.", "depth": 4}},
    }
    if version == "v3":
        data |= {
            "group_only_greetings": [],
            "assets": [{"type": "icon", "uri": "ccdefault:", "name": "main", "ext": "png"}],
            "nickname": "Sera",
        }
    return {"spec": spec, "spec_version": spec_version, "data": data}


def _without_companion_extension(card: dict) -> dict:
    card = copy.deepcopy(card)
    card["data"]["extensions"].pop("companion")
    return card


@pytest.mark.parametrize("version", ["v2", "v3"])
def test_json_cards_round_trip_without_losing_fields(version, tmp_path):
    original = _card(version)
    path = tmp_path / "card.json"
    path.write_text(json.dumps(original))
    persona = read_card_json(path)
    assert persona.id == "seraphina" and persona.first_message.startswith("*Seraphina kneels")
    assert [(line.role, line.text) for line in persona.example_dialogues[0]] == [
        ("player", "Where am I?"),
        ("npc", "In my glade, little one. Rest."),
    ]
    assert persona.lore_for("Tell me about Eldoria") == ["Eldoria is an ancient forest full of spirits."]
    assert persona.system_prompt == original["data"]["system_prompt"]
    exported = write_card_json(persona, tmp_path / "out.json", version=version)
    assert _without_companion_extension(json.loads(exported.read_text())) == original
    # ...and through our YAML too
    again = load_persona(save_persona(persona, tmp_path / "seraphina.yaml"))
    assert _without_companion_extension(card_from_persona(again, version)) == original


def test_png_card_round_trip_keeps_companion_fields_and_the_picture(tmp_path):
    mira = PersonaRegistry([BUNDLED_DIR]).get("mira")
    picture = tmp_path / "picture.png"
    write_card_png(PersonaRegistry([BUNDLED_DIR]).get("orla"), picture)  # any PNG will do as the picture
    card = write_card_png(mira, tmp_path / "mira.png", image=picture)
    assert read_card_png(card) == mira
    assert card.read_bytes().count(b"tEXt") == 2  # the old chunks were replaced, not added to


def test_imported_card_keeps_its_companion_only_fields(tmp_path):
    mira = PersonaRegistry([BUNDLED_DIR]).get("mira")
    assert persona_from_card(card_from_persona(mira, "v3")) == mira


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda d: d.pop("name"), "data.name"),
        (lambda d: d.update(description=""), "data.description"),
        (lambda d: d.update(personality=["not", "text"]), "data.personality"),
        (
            lambda d: d.update(character_book={"entries": [{"content": "no keys"}]}),
            "data.character_book.entries[0]",
        ),
        (lambda d: d.update(extensions="nope"), "data.extensions"),
    ],
)
def test_malformed_cards_name_the_field(mutate, field):
    card = _card("v2")
    mutate(card["data"])
    with pytest.raises(InvalidCardError, match=f"field '{field.replace('[', '.').replace(']', '.')}"):
        persona_from_card(card)


def test_bad_png_cards(tmp_path):
    (tmp_path / "x.png").write_bytes(b"not a png")
    with pytest.raises(InvalidCardError, match="not a PNG"):
        read_card_png(tmp_path / "x.png")
    plain = tmp_path / "plain.png"
    from persona_adapters.cards import _plain_png

    plain.write_bytes(_plain_png())
    with pytest.raises(InvalidCardError, match="picture, not a character card"):
        read_card_png(plain)


@pytest.mark.parametrize(
    ("content", "field"),
    [
        ({"id": "x", "name": "X", "description": "d", "mood": "sad"}, "mood"),
        ({"id": "x", "description": "d"}, "name"),
        ({"id": "Bad Id", "name": "X", "description": "d"}, "id"),
        ({"id": "x", "name": "X", "description": "d", "must_refuse": "cars"}, "must_refuse"),
        (
            {"id": "x", "name": "X", "description": "d", "example_dialogues": [[{"user": "hi"}]]},
            "example_dialogues[0][0]",
        ),
        ({"id": "x", "name": "X", "description": "d", "lorebook": [{"content": "c"}]}, "lorebook[0]"),
    ],
)
def test_yaml_validation_names_file_field_and_fix(tmp_path, content, field):
    path = tmp_path / "npc.yaml"
    path.write_text(yaml.safe_dump(content))
    with pytest.raises(InvalidPersonaError) as error:
        load_persona(path)
    message = str(error.value)
    assert str(path) in message and f"field '{field}'" in message and ";" in message


def test_user_folder_overrides_bundled_and_unknown_ids_list_the_known(tmp_path):
    mira = PersonaRegistry([BUNDLED_DIR]).get("mira")
    from dataclasses import replace

    save_persona(replace(mira, name="Mira the Elder"), tmp_path / "mira.yaml")
    registry = PersonaRegistry([BUNDLED_DIR, tmp_path])
    assert registry.get("mira").name == "Mira the Elder" and registry.file_of("mira").parent == tmp_path
    with pytest.raises(UnknownPersonaError, match="known personas: marlowe, mira, orla"):
        registry.get("nobody")


def test_lorebook_and_boundaries_reach_the_prompt():
    orla = PersonaRegistry([BUNDLED_DIR]).get("orla")
    messages = build_messages(orla, [], "How old is the Kestrel?")
    persona_prompt, turn_note = messages[0]["content"], messages[-2]["content"]
    assert "without a suit" in persona_prompt  # boundaries: every turn, in the persona's system prompt
    assert "forty-year-old Hauler-class freighter" in turn_note  # lore: only when the line asks for it
    assert "forty-year-old" not in " ".join(m["content"] for m in build_messages(orla, [], "Hello"))


@pytest.mark.parametrize(
    ("make", "said"),
    [
        (lambda p: p.write_bytes(bytes(range(256)) * 40), "not a character card"),  # binary, not a PNG
        (lambda p: p.write_text('{"a": ' + "[" * 100_000 + "]" * 100_000 + "}"), "nested too deeply"),
        (lambda p: None, "no such file"),
        (lambda p: p.mkdir(), "is a directory"),
        (lambda p: p.write_bytes(b"{" + b" " * (21 * 2**20) + b"}"), "larger than"),
    ],
)
def test_persona_import_of_a_bad_file_is_one_line_not_a_traceback(tmp_path, capsys, make, said):
    """Issue 16: these printed Python tracebacks (and a 150 MB card was still importing after 120 s)."""
    from companion_cli.main import main

    path = tmp_path / "card.json"
    make(path)
    assert main(["persona", "import", str(path), "--data-dir", str(tmp_path / "data")]) == 1
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1, err


def test_persona_validate_of_a_binary_file_says_so(tmp_path, capsys):
    from companion_cli.main import main

    path = tmp_path / "bad.yaml"
    path.write_bytes(b"\xff\xfe\x00binary" * 100)
    assert main(["persona", "validate", str(path)]) == 1
    err = capsys.readouterr().err
    assert "not UTF-8 text" in err and "Traceback" not in err
