"""llm backend ``openai``: any OpenAI-compatible chat endpoint (OpenAI, vLLM, llama.cpp, Ollama).

The model is LangChain's ``ChatOpenAI`` with two additions: every transport or HTTP failure is an
:class:`~mmagents.errors.EndpointError` naming the URL (never a hang: one ``deadline`` bounds each
call, retries included), and
structured output uses function calling, which llama.cpp's server supports where it rejects
``json_schema`` response formats. Use it through
:func:`mmagents.models.structured.invoke_structured`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mmagents.models._hub import require

if TYPE_CHECKING:
    from langchain_core.language_models import BaseChatModel

__all__ = ["build_openai_chat"]


def build_openai_chat(
    *,
    base_url: str | None = None,
    model: str = "gpt-4o-mini",
    api_key: str | None = None,
    temperature: float = 0.2,
    max_tokens: int = 512,
    timeout: float = 60.0,
    max_retries: int = 2,
    deadline: float = 90.0,
) -> BaseChatModel:
    """Build a chat model for an OpenAI-compatible endpoint.

    Args:
        base_url: The API root, e.g. ``http://127.0.0.1:8080/v1`` (default ``$OPENAI_BASE_URL``,
            else OpenAI's).
        model: Model name as the server knows it (local servers often ignore it).
        api_key: The key; default ``$OPENAI_API_KEY``, and a placeholder for servers other than
            api.openai.com, which accept any.
        temperature: Sampling temperature.
        max_tokens: Maximum new tokens per call.
        timeout: Seconds one attempt may take.
        max_retries: Retries (with back-off) on connection errors, timeouts and 429/5xx answers.
        deadline: Seconds one call may take in all, retries included: a hung endpoint fails
            after this long, not after ``timeout x (1 + max_retries)``.

    Raises:
        BackendUnavailableError: ``langchain-openai`` is not installed.
        ConfigError: api.openai.com without a key.
    """
    support = require("mmagents.models._openai", package="langchain-openai")
    chat: BaseChatModel = support.make_chat(
        base_url=base_url,
        model=model,
        api_key=api_key,
        temperature=temperature,
        max_tokens=max_tokens,
        timeout=timeout,
        max_retries=max_retries,
        deadline=deadline,
    )
    return chat
