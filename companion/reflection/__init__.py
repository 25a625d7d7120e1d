"""Reflection: before each reply, decide what this moment needs; after it, check the draft.

- `Reflector.before(...)` -> `Decision`: strategy (answer, support, recall, refuse), the
  player's emotion, at most two memories worth bringing up now, and the reasons.
- `guidance(decision, persona)` -> instructions the prompt builder adds.
- `Reflector.after(...)` -> `PostCheck`: flags on a draft (breaks character, invents or
  contradicts a memory, ignores the chosen recall, too long) and the correction to retry with.
"""

from companion.reflection.decision import Decision, PostCheck, RecallChoice
from companion.reflection.guidance import correction, guidance
from companion.reflection.reflector import Reflector

__all__ = ["Decision", "PostCheck", "RecallChoice", "Reflector", "correction", "guidance"]
