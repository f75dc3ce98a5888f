"""Seeded random subsets of a dataset (``mmagents eval run … --sample N --seed S``).

IdealGPT evaluates 500 random ids of VCR val / SNLI-VE dev drawn by ``misc/sample_data.py``:
``random.seed(10)`` then ``random.sample(ids_in_file_order, 500)``. :func:`seeded_sample` draws
with the same algorithm (Python's Mersenne Twister behind ``random.Random(seed).sample``), so
``--sample 500 --seed 10`` on the converted file picks the same ids as the reference, and keeps
them in file order, as the reference's data loader does when it filters by the id list.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Any

from mmagents.errors import ConfigError

__all__ = ["seeded_sample"]


def seeded_sample(samples: Sequence[dict[str, Any]], n: int, seed: int) -> list[dict[str, Any]]:
    """``n`` samples drawn without replacement by ``random.Random(seed)``, in their file order.

    Raises:
        ConfigError: ``n`` < 1 or more than there are samples.
    """
    if not 1 <= n <= len(samples):
        raise ConfigError(f"--sample needs 1 <= N <= {len(samples)} (the dataset size), got {n}")
    chosen = set(random.Random(seed).sample([s["id"] for s in samples], n))
    return [s for s in samples if s["id"] in chosen]
