"""Named exceptions of the `persona_adapters` package."""


class PersonaError(Exception):
    """Base class of every error this package raises on purpose."""


class UnknownPersonaError(PersonaError, KeyError):
    """No persona has the requested id."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class InvalidPersonaError(PersonaError, ValueError):
    """A persona's fields are missing or malformed."""


class InvalidCardError(PersonaError, ValueError):
    """A Character Card (JSON or PNG) is malformed; the message names the field."""
