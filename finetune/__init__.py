"""mmagents.finetune: distillation into small students, and trained students as backends.

``mmagents finetune meme`` trains the Mr.Harm meme student (encoder or generative LoRA variant);
the output folder's ``student.json`` names its kind, and :func:`load_finetuned` turns any such
folder back into a ready model through the registry :data:`FINETUNED`::

    from mmagents.finetune import load_finetuned

    student = load_finetuned("/tmp/student")          # kind "meme_student"
    print(student.classify("when you finally ...", "a man laughing").label)

Importing this package imports no torch.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mmagents._registry import Registry
from mmagents.errors import ConfigError

__all__ = ["FINETUNED", "load_finetuned", "register_finetuned"]

#: kind (``student.json``'s ``kind``) → lazy loader ``(folder) -> model``.
FINETUNED: Registry[Any] = Registry("finetuned model kind")
FINETUNED.register("meme_student", "mmagents.models.memes:load_student")


def register_finetuned(kind: str, target: Any, *, replace: bool = False) -> None:
    """Register a loader (object or lazy ``"module:Attr"``) for student folders of ``kind``."""
    FINETUNED.register(kind, target, replace=replace)


def load_finetuned(folder: str | Path) -> Any:
    """Load a trained model folder through the loader registered for its ``kind``.

    Raises:
        ConfigError: no readable ``student.json``, or an unregistered kind.
    """
    meta_file = Path(folder).expanduser() / "student.json"
    try:
        kind = json.loads(meta_file.read_text()).get("kind")
    except (FileNotFoundError, json.JSONDecodeError, AttributeError):
        raise ConfigError(f"{meta_file.parent} is not a trained model folder") from None
    return FINETUNED.get(str(kind))(folder)
