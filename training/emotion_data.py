"""Synthetic, labelled player lines for the reflection module's emotion classifier.

Five labels: neutral, sadness, distress (fear, anxiety, stress), anger, joy. Written for
this project from templates and word lists; nothing is downloaded. The scripted
scenarios in tests/data/reflection_scenarios.yaml are written separately and measure
the classifier as part of the decision layer.
"""

from __future__ import annotations

import random

SUBJECTS = [
    "my job",
    "my family",
    "the exam",
    "my sister",
    "the move",
    "money",
    "my health",
    "the farm",
    "my friends",
    "the war",
    "my boss",
    "the trip",
    "my marriage",
    "school",
    "the ship",
    "the harvest",
]
PEOPLE = [
    "my mum",
    "my dad",
    "my best friend",
    "my partner",
    "my brother",
    "my grandmother",
    "my dog",
    "my cat",
]
GOOD_THINGS = [
    "got the job",
    "passed my exam",
    "won the tournament",
    "got engaged",
    "finished my book",
    "found my lost dog",
    "got promoted",
    "made a new friend",
    "sold my first painting",
    "caught a huge fish",
    "finally got my license",
    "fixed the engine",
]
BAD_THINGS = [
    "lost my job",
    "failed the test",
    "broke up with my partner",
    "lost my wallet",
    "got rejected",
    "ruined the dinner",
    "missed the deadline",
    "crashed the cart",
    "lost the match",
]

TEMPLATES: dict[str, list[str]] = {
    "sadness": [
        "I feel so alone.",
        "I miss {person} so much.",
        "Nobody cares about me.",
        "I've been crying all day.",
        "I feel empty inside.",
        "Everything is grey lately.",
        "I just {bad} and I feel terrible.",
        "{person_cap} passed away and I can't stop thinking about it.",
        "I'm so lonely since the move.",
        "I don't have anyone to talk to.",
        "I feel like such a failure.",
        "Nothing makes me happy anymore.",
        "I'm heartbroken.",
        "I feel so down today.",
        "It's been a really sad week.",
        "I wish things were different.",
        "Sometimes I feel invisible.",
        "I lost {person} last month.",
        "I'm tired of being alone.",
        "I feel hopeless about {subject}.",
        "My heart hurts.",
        "I haven't smiled in weeks.",
    ],
    "distress": [
        "I'm so nervous about {subject}.",
        "I'm scared something bad will happen.",
        "I can't stop worrying.",
        "I'm freaking out about {subject}.",
        "I'm terrified.",
        "My hands are shaking, I'm so anxious.",
        "I have a big test tomorrow and I'm panicking.",
        "I can't sleep because of {subject}.",
        "Everything is too much right now.",
        "I feel overwhelmed by {subject}.",
        "I'm stressed out of my mind.",
        "What if I fail?",
        "I'm really worried about {person}.",
        "I think I'm having a panic attack.",
        "I don't know what to do, help me.",
        "I'm afraid I'll lose {subject}.",
        "My chest is tight with worry.",
        "I'm so anxious I feel sick.",
        "I'm dreading tomorrow.",
        "The pressure is crushing me.",
        "I keep thinking the worst will happen.",
        "I'm scared to go home.",
    ],
    "anger": [
        "I'm so angry right now.",
        "{person_cap} lied to me again!",
        "I'm furious with my boss.",
        "This is so unfair!",
        "I hate how they treat me.",
        "I want to punch a wall.",
        "They ruined everything!",
        "I'm sick of {subject}.",
        "How dare they!",
        "I'm livid.",
        "That merchant cheated me out of my money!",
        "I'm so mad at {person}.",
        "Stop telling me what to do!",
        "I've had enough of this nonsense.",
        "Why does everyone keep ignoring me? It makes me so mad.",
        "I could scream.",
        "This is outrageous.",
        "I'm fed up with {subject}.",
        "They stole my horse, I'm furious!",
        "I'm really annoyed with you.",
    ],
    "joy": [
        "I {good}!",
        "I'm so happy today!",
        "Guess what, I {good}!",
        "This is the best day ever!",
        "I'm thrilled!",
        "I can't stop smiling.",
        "Everything is going great.",
        "I'm so excited about {subject}!",
        "We did it!",
        "I'm on top of the world.",
        "I'm really proud of myself.",
        "Yay, finally!",
        "I feel amazing today.",
        "I just {good} and I'm over the moon!",
        "Life is wonderful right now.",
        "I'm bursting with joy.",
        "Best news ever: I {good}!",
        "I'm so grateful for everything.",
        "I couldn't be happier.",
        "What a fantastic day!",
    ],
    "neutral": [
        "What's on the menu tonight?",
        "Can I get a room?",
        "How much for the ale?",
        "Where is the blacksmith?",
        "Tell me about this town.",
        "I'd like the stew, please.",
        "Hello there.",
        "Good evening.",
        "What do you think about {subject}?",
        "I have a dog named Rex.",
        "I work as a nurse.",
        "I live in Oslo.",
        "I've been craving hotpot lately.",
        "Do you know any stories?",
        "Is the road north safe?",
        "I'm thinking of going on a hike tomorrow.",
        "What's the weather like?",
        "Thanks for the meal.",
        "I'm going to the market later.",
        "Can you recommend a drink?",
        "What's a smartphone?",
        "My sister is getting married next month.",
        "I have a driving test next Friday.",
        "I like spicy food.",
        "Who runs this place?",
        "How long have you worked here?",
        "I'll have another one.",
        "See you tomorrow.",
        "I need to buy some rope.",
        "Have you heard any news?",
        "What time do you close?",
        "Remember me?",
    ],
}

LABELS = ("neutral", "sadness", "distress", "anger", "joy")


def _fill(template: str, rng: random.Random) -> str:
    person = rng.choice(PEOPLE)
    return template.format(
        subject=rng.choice(SUBJECTS), person=person, person_cap=person[:1].upper() + person[1:],
        good=rng.choice(GOOD_THINGS), bad=rng.choice(BAD_THINGS),
    )  # fmt: skip


PREFIXES = ["", "", "", "Honestly, ", "Ugh, ", "Oh, ", "You know, ", "Well, ", "Listen, "]


def build_dataset(n_per_class: int = 300, seed: int = 0) -> list[tuple[str, str]]:
    """(line, label) pairs, up to `n_per_class` distinct lines per label."""
    rng = random.Random(seed)
    rows: list[tuple[str, str]] = []
    for label in LABELS:
        seen: set[str] = set()
        for _ in range(n_per_class * 20):
            if len(seen) >= n_per_class:
                break
            text = _fill(rng.choice(TEMPLATES[label]), rng)
            prefix = rng.choice(PREFIXES)
            if prefix and not text.startswith(("I ", "I'")):
                text = text[:1].lower() + text[1:]
            seen.add(prefix + text)
        rows += [(t, label) for t in sorted(seen)]
    rng.shuffle(rows)
    return rows
