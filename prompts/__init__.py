"""Prompts are data: one versioned YAML file per LLM role, rendered with Jinja's StrictUndefined.

A prompt file ``prompts/<role>.yaml`` looks like::

    role: questioner
    version: 1
    variants:
      first_round:
        system: "You ask sub-questions ..."
        user: "Question: {{ question }} ..."
      later_round:
        ...

A missing template variable is an error (:class:`jinja2.UndefinedError`), never an empty string.
The ``version`` goes into cache keys, so editing a prompt invalidates what it produced before.

Text from an image or a document (captions, OCR, tool results, document steps) is untrusted: a
template puts it in a data block with the filters ``data_block("tag")`` (one value) or, for a
rendered section, ``{% filter data_block("tag") %}…{% endfilter %}``, and ``untrusted`` cleans a
value without wrapping it (see :mod:`mmagents.prompts._untrusted`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from importlib import resources
from typing import Any

from mmagents.errors import ConfigError
from mmagents.prompts._untrusted import data_block, untrusted

__all__ = ["PromptSpec", "load_prompt", "render_messages"]


@dataclass(frozen=True)
class PromptSpec:
    """A role's prompt file: its version and its variants (``{variant: {"system"|"user": text}}``)."""

    role: str
    version: int
    variants: dict[str, dict[str, str]]

    def render(self, variant: str, **variables: Any) -> dict[str, str]:
        """Render the ``system`` and ``user`` templates of ``variant``.

        Raises:
            ConfigError: unknown variant.
            jinja2.UndefinedError: a variable used by the template was not given.
        """
        if variant not in self.variants:
            raise ConfigError(
                f"prompt {self.role!r} has no variant {variant!r}; has {sorted(self.variants)}"
            )
        return {
            part: _template(text).render(**variables).strip()
            for part, text in self.variants[variant].items()
        }


@cache
def _environment() -> Any:
    import jinja2

    environment = jinja2.Environment(
        undefined=jinja2.StrictUndefined, keep_trailing_newline=False, autoescape=False
    )
    environment.filters["data_block"] = data_block
    environment.filters["untrusted"] = untrusted
    return environment


@cache
def _template(text: str) -> Any:
    """Compile a template once per process (rendering is hot in evaluation loops)."""
    return _environment().from_string(text)


@cache
def load_prompt(role: str) -> PromptSpec:
    """Load ``prompts/<role>.yaml`` from the installed package.

    Raises:
        ConfigError: the file is missing or malformed.
    """
    import yaml

    resource = resources.files("mmagents.prompts") / f"{role}.yaml"
    if not resource.is_file():
        raise ConfigError(f"no prompt file for role {role!r} (expected prompts/{role}.yaml)")
    data = yaml.safe_load(resource.read_text(encoding="utf-8"))
    try:
        return PromptSpec(
            role=data["role"], version=int(data["version"]), variants=data["variants"]
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"malformed prompt file prompts/{role}.yaml: {exc}") from None


def render_messages(role: str, variant: str, **variables: Any) -> list[Any]:
    """Render a prompt variant as LangChain messages (system first, when present)."""
    from langchain_core.messages import HumanMessage, SystemMessage

    parts = load_prompt(role).render(variant, **variables)
    messages: list[Any] = []
    if parts.get("system"):
        messages.append(SystemMessage(content=parts["system"]))
    messages.append(HumanMessage(content=parts["user"]))
    return messages
