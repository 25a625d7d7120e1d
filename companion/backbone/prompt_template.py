"""Chat messages to prompt text for engines that take text: the model's own Jinja chat template.

The template is the one the checkpoint carries (a GGUF's `tokenizer.chat_template`), run
in Jinja's sandbox as transformers runs it, so every engine sees the same prompt text.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from companion.errors import ConfigError

Message = Mapping[str, str]  # {"role": "system" | "user" | "assistant", "content": str}
Prompt = str | Sequence[Message]


class ChatTemplate:
    """A compiled chat template.

    Args:
        source: the Jinja template text.
        bos_token, eos_token: the special tokens' text, for templates that write them.
    """

    def __init__(self, source: str, *, bos_token: str = "", eos_token: str = ""):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        self.bos_token, self.eos_token = bos_token, eos_token

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise
        self._template = env.from_string(source)

    @classmethod
    def from_gguf(
        cls, source: str | None, *, bos_token: str = "", eos_token: str = ""
    ) -> ChatTemplate | None:
        return cls(source, bos_token=bos_token, eos_token=eos_token) if source else None

    def render(self, messages: Sequence[Message], *, add_generation_prompt: bool = True) -> str:
        """The prompt text, by default ready for the assistant's turn."""
        return self._template.render(
            messages=list(messages),
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )


def _raise(message: str) -> None:
    raise ConfigError(f"the chat template rejected the messages: {message}")


def fit_messages(
    messages: Sequence[Message], tokens_of: Callable[[Sequence[Message]], list[int]], budget: int
) -> list[int]:
    """Tokens of `messages`, dropping the oldest turns after the system message until they fit `budget`.

    The system message (the persona) and the last message (the player's line, and any
    guidance just before it) always stay.
    """
    messages = list(messages)
    tokens = tokens_of(messages)
    first = 1 if messages and messages[0]["role"] == "system" else 0
    while len(tokens) > budget and len(messages) - first > 2:
        del messages[first]
        tokens = tokens_of(messages)
    return tokens
