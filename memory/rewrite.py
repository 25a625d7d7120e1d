"""Rewriting a player's first-person sentence as a third-person fact, and typing its slot.

"I love spicy food." -> "The player loves spicy food."
"My sister Anna is getting married." -> "The player's sister Anna is getting married."
"I gave you a silver ring." -> "The player gave Mira a silver ring."
Rules, not a model: fast, predictable, and easy to read when one is wrong.
"""

from __future__ import annotations

import re

_MODALS = {"can", "could", "will", "would", "shall", "should", "may", "might", "must", "did", "was", "had"}
_IRREGULAR = {"have": "has", "do": "does", "go": "goes", "am": "is", "'m": "is", "'ve": "has", "'ll": "will",
              "'d": "would", "don't": "doesn't", "haven't": "hasn't", "am not": "is not",
              "wanna": "wants to", "gotta": "has got to"}  # fmt: skip
PAST_IRREGULAR = {
    "was", "had", "did", "got", "went", "gave", "lost", "broke", "won", "moved", "made", "took", "saw", "met",
    "left", "fell", "found", "brought", "told", "sold", "bought", "grew", "felt", "kept", "came", "ran", "hurt",
    "put", "quit", "cut", "thought", "swam", "sang", "fought", "caught", "taught", "threw", "wrote", "rode", "ate",
    "drank", "slept", "spent", "became", "began", "built", "heard", "stole", "held", "paid", "said", "sent",
    "lent", "forgot", "understood", "shot", "hid", "fed", "led", "bit", "dug", "drove", "flew", "forgave", "froze",
    "hung", "knew", "lit", "meant", "rang", "rose", "shook", "sank", "sat", "spoke", "stood", "struck", "swore",
    "tore", "woke", "wore", "wept", "beat", "bet", "chose", "drew", "dreamt", "let", "set", "shut", "split",
    "spread", "sprained", "adopted", "survived", "passed", "used", "burnt", "learnt", "spilt", "spelt", "smelt",
}  # fmt: skip
_PRONOUNS = [
    (r"\bmyself\b", "themselves"),
    # "mine" after a determiner or a kind is the pit ("my life in the mine", "a gold mine")
    (
        r"(?<!\bthe )(?<!\ba )(?<!\bthat )(?<!\bthis )(?<!\bold )(?<!\bgold )(?<!\bcoal )(?<!\biron )\bmine\b",
        "theirs",
    ),
    (r"\bmy\b", "the player's"),
    (r"\bme\b", "them"),
    (r"\bwe're\b", "the player and {we} are"),
    (r"\bwe've\b", "the player and {we} have"),
    (r"\bwe\b", "the player and {we}"),
    (r"\bus\b", "the player and {we}"),
    (r"\bour\b", "their"),
    (r"\byourself\b", "{npc}"),
    (r"\byours\b", "{npc_pos}"),
    (r"\byour\b", "{npc_pos}"),
    (r"\byou're\b", "{npc} is"),
    (r"\byou've\b", "{npc} has"),
    (r"\byou\b", "{npc}"),
]
_ADVERBS = (
    r"just|really|also|always|never|still|already|finally|recently|actually|often|sometimes|usually|honestly"
    r"|even|kinda|sorta|now"
    # any other -ly word but the verbs that end so ("I totally agree", not "the player totallies agree")
    r"|(?!(?:fly|apply|reply|rely|supply|comply|imply|multiply|rally|tally|bully|ally)\b)[a-z]+ly"
)
_I_VERB = re.compile(
    rf"\bI(?P<contraction>'m|'ve|'ll|'d)?(?!\w)(?P<adverb>\s+(?:{_ADVERBS}))?"
    r"(?:\s+(?P<neg>am not|don't|haven't)|\s+(?P<verb>[a-z]+n't|[a-z]+))?"
)
_LEADING_FILLER = re.compile(
    r"^(?:(?:well|oh|honestly|so|actually|you know|by the way|anyway|um|uh|haha|lol|hey)[,!.]?\s+"
    r"|remember (?:when|the time|that|how)\s+|(?:you )?know what\??\s+)+",
    re.I,
)
_TRAILING_TAG = re.compile(r",?\s*(?:remember|right|you know)\s*[?!.]*$", re.I)
_GREETING = (
    r"(?:hey|hi|hello|thanks|thank you|yeah|yes|yep|wow|oh|aw+|sorry|congrats|ok|okay|haha|lol|no|well)"
)


def without_address(sentence: str, name: str) -> str:
    """`sentence` without the words that only address `name`: "Thanks, Nate! I ..." -> "I ...",
    "I get it, Jon." -> "I get it." (otherwise the name is the fact's rarest word, and keyword
    search brings back every "thanks, Jon" whenever Jon is named)."""
    who = re.escape(name)
    text = re.sub(rf"^(?:(?:{_GREETING}[,!.]?\s+)*{who}\b[,!.]*\s*)+", "", sentence, flags=re.I)
    return re.sub(rf",\s*{who}\s*([.!?]*)\s*$", r"\1", text, flags=re.I)


# Chat drops the "I": "Just started aerial yoga.", "Been busy at the shelter.", "Still working on it."
_DROPPED_I = re.compile(
    rf"^(?P<lead>(?:{_GREETING}[,!.]?\s+)*)(?P<adverb>(?:just|still|finally|recently|also|already|really|"
    r"totally|actually|never|always)\s+)?(?P<verb>[A-Za-z]+)(?P<rest>\b(?!'|\u2019).*)$",
    re.IGNORECASE,
)
# an -ing word that is the sentence's subject, not the player's doing ("Creating a space is key")
_GERUND_IS_SUBJECT = re.compile(r"\b(?:is|was|are|were|makes|made|helps|keeps|gives|means)\b", re.I)
_NOT_DOING = frozenset(
    """bring string spring swing sting cling fling sling wring thing nothing something anything everything
    morning evening ceiling wedding building darling pudding during sibling""".split()
)
# past forms that are also the bare verb, so also an imperative ("Put it down.")
_PAST_OR_IMPERATIVE = frozenset("put set let cut shut split spread beat bet hurt quit read".split())
_ENDS_ED = frozenset(
    "hundred wicked naked sacred kindred rugged beloved crooked jared alfred mildred wilfred".split()
)
SAYS_YOU = re.compile(r"\b(?:you|your|you're|yours)\b", re.IGNORECASE)  # said to the character
_STATES = frozenset(
    """bored tired scared excited married worried interested stressed exhausted thrilled pleased amazed
    shocked surprised stoked blessed obsessed engaged hooked psyched pumped""".split()
)  # "Stoked about the trip!" is "I'm stoked", not "I stoked"


def restore_dropped_subject(sentence: str) -> str:
    """The player's "I" put back where chat style drops it, so the sentence is read as the
    player's fact: "Just started doing aerial yoga." -> "I just started doing aerial yoga.",
    "Been busy volunteering at the shelter." -> "I've been busy volunteering at the shelter.",
    "Still working on opening a studio." -> "I'm still working on opening a studio.", "Stoked
    about the trip next week!" -> "I'm stoked about the trip next week!". Only past forms, -ing
    forms and states: a bare verb may be an imperative ("Take a look."), an -s form has another
    subject ("Sounds great."). Left as they are: questions, an -ing word that is the subject
    ("Painting is my escape."), and short reactions or lines said to the character ("Loving it!",
    "Thinking of you."), which the "I" would turn into facts."""
    match = _DROPPED_I.match(sentence.strip())
    if (
        match is None
        or sentence.rstrip().endswith("?")
        or len(sentence.split()) < 5  # "Loving it!", "Been a while!": reactions, not facts
        or SAYS_YOU.search(sentence)  # "Thinking of you.", "Excited for you!"
        or re.match(r"\s+to go\b", match.group("rest"))  # "Got to go, talk later!"
    ):
        return sentence
    lead, adverb, verb, rest = (match.group(g) or "" for g in ("lead", "adverb", "verb", "rest"))
    word = verb.lower()
    if word == "been":
        subject = "I've"
    elif word in _STATES:
        subject = "I'm"
    elif word.endswith("ing") and len(word) > 5 and word not in _NOT_DOING:
        if _GERUND_IS_SUBJECT.search(rest):
            return sentence
        subject = "I'm"
    elif word in ("gonna", "wanna", "gotta"):
        subject = "I'm" if word == "gonna" else "I"
    elif (word in PAST_IRREGULAR and word not in _PAST_OR_IMPERATIVE) or (
        word.endswith("ed") and not word.endswith("eed") and len(word) > 4 and word not in _ENDS_ED
    ):
        subject = "I"
    else:
        return sentence
    return f"{lead}{subject} {adverb.lower()}{word}{rest}"


def _third_person_verb(verb: str) -> str:
    if verb in _IRREGULAR:
        return _IRREGULAR[verb]
    if verb in _MODALS or verb in PAST_IRREGULAR or verb.endswith("ed") or verb.endswith("n't"):
        return verb
    if re.search(r"(s|sh|ch|x|z|o)$", verb):
        return verb + "es"
    if re.search(r"[^aeiou]y$", verb):
        return verb[:-1] + "ies"
    return verb + "s"


_ADDRESSES_NPC = re.compile(r"^\s*remember\b|\byou\b|\byour\b", re.IGNORECASE)


def to_third_person(sentence: str, npc_name: str | None = None) -> str:
    """A third-person fact about "the player" from a first-person sentence.

    "We" is the player and the NPC only when the sentence speaks to the NPC ("remember when we
    ...", "we ... you"); otherwise it is the player and others ("We adopted a greyhound" is not a
    shared history with the character).

    Args:
        sentence: one sentence the player said.
        npc_name: who "you" is; "the NPC" when unknown.
    """
    npc = npc_name or "the NPC"
    we = npc if _ADDRESSES_NPC.search(sentence) else "others"
    npc_pos = f"{npc}'s"
    text = without_address(sentence.strip(), npc_name) if npc_name else sentence.strip()
    text = _LEADING_FILLER.sub("", text)
    text = _TRAILING_TAG.sub("", text)
    text = re.sub(r"\s+", " ", text)

    def subject(match: re.Match) -> str:
        contraction, neg, verb = match.group("contraction"), match.group("neg"), match.group("verb")
        adverb = match.group("adverb") or ""
        if contraction:
            rest = f" {verb}" if verb else (f" {neg}" if neg else "")
            return "the player " + _IRREGULAR[contraction] + adverb + rest
        if neg:
            return "the player" + adverb + " " + _IRREGULAR[neg]
        if verb and re.search(r"\band\s*$", match.string[: match.start()], re.IGNORECASE):
            return "the player" + adverb + " " + verb  # "my wife and I are": a plural subject
        if verb:
            return "the player" + adverb + " " + _third_person_verb(verb)
        return "the player" + adverb

    text = _I_VERB.sub(subject, text)
    for pattern, replacement in _PRONOUNS:
        text = re.sub(pattern, replacement.format(npc=npc, npc_pos=npc_pos, we=we), text, flags=re.IGNORECASE)
    first = text.lower().find("the player")
    if first != -1:  # "The player worries about their brother", not "...about the player's brother"
        head, tail = text[: first + len("the player")], text[first + len("the player") :]
        text = head + re.sub(r"\bthe player's\b", "their", tail, flags=re.IGNORECASE)
    text = text.rstrip(" .!?") + "."
    return text[:1].upper() + text[1:]


# (slot, type, pattern): a new fact with the same slot supersedes the old one.
_SLOTS: list[tuple[str, str, re.Pattern]] = [
    ("name", "personal_info", re.compile(r"\b(my name is|call me|i go by|people call me)\b", re.I)),
    ("age", "personal_info", re.compile(r"\b(\d+|twenty|thirty|forty|fifty|sixty)[- ]?\w* (years old|this year)|\bi'?m (\d+)\b|\bturned \d+", re.I)),
    ("home", "personal_info", re.compile(r"\b(i live|i'm living|i moved to|just moved|my (home|place|flat|house) is|i stay in|renting)\b", re.I)),
    ("job", "personal_info", re.compile(r"\b(i work|i'm an? |i am an? |my job|for a living|by trade|new job|retired)\b", re.I)),
    ("birthday", "personal_info", re.compile(r"\bbirthday\b", re.I)),
    ("diet", "preference", re.compile(r"\b(vegetarian|vegan|eat(ing)? meat|given up meat|pescatarian)\b", re.I)),
    ("favourite_colour", "preference", re.compile(r"\bfavou?rite colou?r\b", re.I)),
    ("partner", "relationship", re.compile(r"\b(dating|engaged to|my (girlfriend|boyfriend|partner|husband|wife)\b)", re.I)),
]  # fmt: skip


def detect_slot(event_type: str, sentence: str) -> str | None:
    """The attribute a sentence sets, when it is one that changes over time (home, job, diet...)."""
    for slot, slot_type, pattern in _SLOTS:
        if slot_type == event_type and pattern.search(sentence):
            return slot
    return None
