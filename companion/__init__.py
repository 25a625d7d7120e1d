"""Companion: the turn pipeline and the Mixture-of-Experts backbone behind NPC replies."""

__version__ = "0.1.0"
