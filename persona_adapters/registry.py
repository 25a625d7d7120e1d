"""Where personas and their adapters are found: the bundled folder, then user folders.

User folders come from $COMPANION_PERSONA_DIRS (separated by the OS path separator) and
`<data dir>/personas`. A user persona with a bundled persona's id replaces it. Adapters
are not loaded here (this package knows no backbone); `adapter_dir(id)` says where
one is, and the backbone loads it lazily on first use.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from persona_adapters.errors import UnknownPersonaError
from persona_adapters.persona import Persona, load_persona

BUNDLED_DIR = Path(__file__).parent / "personas"
PERSONA_DIRS_ENV = "COMPANION_PERSONA_DIRS"


class PersonaRegistry:
    """Personas by id, read from folders of YAML files (later folders win).

    Args:
        folders: folders to read, in order.
    """

    def __init__(self, folders: Iterable[str | Path]):
        self.folders = [Path(f) for f in folders]
        self._personas: dict[str, Persona] = {}
        self._files: dict[str, Path] = {}
        self.reload()

    @classmethod
    def default(cls, data_dir: str | Path | None = None) -> PersonaRegistry:
        """Bundled personas, then $COMPANION_PERSONA_DIRS, then `<data_dir>/personas`."""
        folders: list[Path] = [BUNDLED_DIR]
        folders += [Path(p) for p in os.environ.get(PERSONA_DIRS_ENV, "").split(os.pathsep) if p]
        if data_dir is not None:
            folders.append(Path(data_dir) / "personas")
        return cls(folders)

    def reload(self) -> None:
        """Re-reads every folder (raises on the first invalid file, naming it)."""
        personas, files = {}, {}
        for folder in self.folders:
            for path in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
                persona = load_persona(path)
                personas[persona.id], files[persona.id] = persona, path
        self._personas, self._files = personas, files

    def ids(self) -> list[str]:
        return sorted(self._personas)

    def all(self) -> list[Persona]:
        return [self._personas[i] for i in self.ids()]

    def get(self, persona_id: str) -> Persona:
        """The persona with this id.

        Raises:
            UnknownPersonaError: naming the personas that exist.
        """
        try:
            return self._personas[persona_id]
        except KeyError:
            known = ", ".join(self.ids()) or "none"
            raise UnknownPersonaError(f"unknown persona {persona_id!r}; known personas: {known}.") from None

    def file_of(self, persona_id: str) -> Path:
        self.get(persona_id)
        return self._files[persona_id]

    def adapter_dir(self, persona_id: str) -> Path | None:
        """The persona's adapter directory when it declares one that exists, else None."""
        persona = self.get(persona_id)
        if not persona.adapter_path:
            return None
        path = (self._files[persona_id].parent / persona.adapter_path).resolve()
        return path if (path / "adapter_config.json").is_file() else None
