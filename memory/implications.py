"""What a player's words imply, so that recall finds facts that are not said alike.

"I've been craving hotpot" and "The player has a sensitive stomach" share no words and
have a cosine similarity of ~0.07 in all-MiniLM-L6-v2; nearest neighbours alone never
connect them. Each topic below pairs example phrasings with the concerns it raises
(food -> stomach, allergies, diet). When a query is close to a topic, the store also
searches with that topic's concerns, and an event's relevance is the better of the two
similarities.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Topic:
    name: str
    examples: tuple[str, ...]
    concerns: str


TOPICS: tuple[Topic, ...] = (
    Topic(
        "food",
        (
            "I'm craving hotpot tonight.",
            "Let's grab some pizza.",
            "What should I eat for dinner?",
            "I want to try that spicy noodle place.",
            "I'm so hungry, give me your biggest meal.",
            "Do you have any dessert or cake?",
        ),
        "food eating meal: stomach, digestion, diet, vegetarian or vegan, food allergy, intolerance",
    ),
    Topic(
        "drink",
        (
            "Pour me an ale!",
            "Let's go drinking tonight.",
            "I could use a strong drink.",
            "Let's get wine and cocktails.",
        ),
        "alcohol drinking: sobriety, medication, health, early morning plans",
    ),
    Topic(
        "exercise",
        (
            "I'm thinking of going on a long hike tomorrow.",
            "I want to run a marathon.",
            "Let's climb the mountain together.",
            "I signed up for a football match.",
            "I'm going to the gym later.",
        ),
        "physical exercise: injury, knee, back pain, asthma, fitness, health",
    ),
    Topic(
        "travel",
        (
            "I booked a flight to Spain!",
            "I'm going on a trip next week.",
            "We should sail across the sea.",
            "I'm moving to another city.",
        ),
        "travel trip flight: fear of flying, seasickness, travel plans, a pet left alone at home, family",
    ),
    Topic(
        "night",
        (
            "I might stay up all night partying.",
            "Let's go out late tonight.",
            "I can't sleep at all.",
        ),
        "night party sleep: work shift, exam, early plans, tiredness, insomnia",
    ),
    Topic(
        "work",
        (
            "Work was brutal today.",
            "My boss yelled at me.",
            "I have a job interview.",
            "I'm thinking about quitting my job.",
        ),
        "work job career: job, workplace, stress, plans, money",
    ),
    Topic(
        "family",
        (
            "I'm visiting my parents this weekend.",
            "My family is coming over.",
            "It's a big holiday gathering.",
        ),
        "family gathering: relatives, sister, brother, parents, wedding, conflicts",
    ),
    Topic(
        "animals",
        (
            "I saw a cute puppy today.",
            "There's a cat outside.",
            "I want to ride a horse.",
        ),
        "animals: pets, dog, cat, allergy to animals, fear of animals",
    ),
    Topic(
        "outdoors",
        (
            "Let's go swimming in the lake.",
            "It's freezing outside.",
            "I want to camp in the forest.",
        ),
        "outdoors weather: cold, allergies, hay fever, fear of water, swimming",
    ),
    Topic(
        "worry",
        (
            "I'm so nervous.",
            "I can't stop worrying about next week.",
            "I'm scared I'll mess it up.",
            "I'm stressed about what's coming.",
        ),
        "upcoming test, exam, interview, appointment, surgery, deadline, competition",
    ),
    Topic(
        "sadness",
        (
            "I feel so alone.",
            "I've been really down lately.",
            "I miss them so much.",
            "Nothing feels right anymore.",
        ),
        "loss, grief, breakup, death, lost job, moving away, loneliness, missing family",
    ),
    Topic(
        "celebration",
        (
            "Let's celebrate tonight!",
            "It's almost my birthday.",
            "I want to throw a party.",
        ),
        "celebration: birthday, anniversary, good news, plans, achievements",
    ),
)


class ImpliedConcerns:
    """The concern vectors of the topics a query is close to; the topics are embedded once,
    on first use (or `near(zeros)` to warm up)."""

    def __init__(self, embedder, threshold: float):
        self.embedder, self.threshold = embedder, threshold
        self._vectors: list[tuple[np.ndarray, np.ndarray]] | None = None

    def near(self, query_vector: np.ndarray) -> list[np.ndarray]:
        if self._vectors is None:
            self._vectors = [
                (
                    np.asarray(self.embedder.embed(list(t.examples)), dtype=np.float32),
                    np.asarray(self.embedder.embed([t.concerns])[0], dtype=np.float32),
                )
                for t in TOPICS
            ]
        return [
            c for examples, c in self._vectors if float((examples @ query_vector).max()) >= self.threshold
        ]
