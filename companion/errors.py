"""Named exceptions of the `companion` package.

Each message says what came, what was expected and how to fix it.
"""


class CompanionError(Exception):
    """Base class of every error this package raises on purpose."""


class ConfigError(CompanionError, ValueError):
    """A configuration value is out of range or inconsistent."""


class ModelNotProvisionedError(CompanionError):
    """The default model's files are missing (package not installed, cache empty)."""


class ModelLoadFailedError(CompanionError):
    """A model could not be loaded from the path or name the user gave."""


class AdapterError(CompanionError):
    """A LoRA adapter could not be loaded, found or used."""


class UnsupportedRoutingError(CompanionError):
    """The model has no router that Companion's routing policies can drive."""


class GenerationFailedError(CompanionError):
    """The backbone raised while generating; the cause is chained."""


class EngineUnavailableError(CompanionError):
    """The engine cannot serve now: its server is down or unreachable, or its worker stopped.

    Transient: the same request may succeed once the engine is back.
    """
