"""Untrusted text in delimited prompt blocks: the helper lives in :mod:`mmagents.prompts._untrusted`.

Kept so existing imports (``from mmagents.agents._untrusted import untrusted``) go on working;
there is one implementation, the prompts layer's, which models and tools can use too.
"""

from __future__ import annotations

from mmagents.prompts._untrusted import DATA_TAGS, data_block, untrusted

__all__ = ["DATA_TAGS", "data_block", "untrusted"]
