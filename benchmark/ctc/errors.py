"""One exception type for malformed CTC data; its message always names the file."""

from __future__ import annotations

from pathlib import Path


class CTCFormatError(ValueError):
    """A CTC file or folder is malformed. ``str(err)`` is one line: ``<path>: <problem>``."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")
