"""The harmful/harmless label vocabulary, as the agents layer has always exported it.

The table itself lives in core, :mod:`mmagents.memes` (the students in ``models/`` read it too, and
they sit below this layer); this module re-exports it so ``mmagents.agents.meme_labels`` keeps
working. There is one vocabulary, not two.
"""

from __future__ import annotations

from mmagents.memes import HARMFUL, HARMLESS, LABELS, SYNONYMS, normalise_label

__all__ = ["HARMFUL", "HARMLESS", "LABELS", "SYNONYMS", "normalise_label"]
