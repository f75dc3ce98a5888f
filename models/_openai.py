"""What the ``openai`` llm and vlm backends share: the chat model class, API keys, typed errors.

This module imports ``openai`` and ``langchain_openai`` at the top; the backends import it inside
their factories, so nothing pays for it until an OpenAI-compatible backend is actually built.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from typing import Any, ClassVar
from urllib.parse import urlparse

import openai
from langchain_core.outputs import ChatGenerationChunk, ChatResult
from langchain_openai import ChatOpenAI
from pydantic import Field, SecretStr

from mmagents.errors import ConfigError, EndpointError
from mmagents.models.sampling import SAMPLING_PARAMS

__all__ = [
    "DEFAULT_BASE_URL",
    "EndpointChatOpenAI",
    "endpoint_errors",
    "make_chat",
    "resolve_api_key",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"


def resolve_api_key(api_key: str | None, base_url: str) -> str:
    """The key to send: the option, else ``$OPENAI_API_KEY``, else a placeholder for local servers.

    Raises:
        ConfigError: api.openai.com was chosen but no key is configured.
    """
    key = api_key or os.environ.get("OPENAI_API_KEY")
    if key:
        return key
    if urlparse(base_url).hostname == "api.openai.com":
        raise ConfigError(
            f"no API key for {base_url}: set the role's api_key option "
            "(e.g. MMAGENTS_LLM__API_KEY) or OPENAI_API_KEY"
        )
    # llama.cpp's server, vLLM and Ollama accept any key but the client insists on one.
    return "not-needed"


def _root_cause(exc: BaseException) -> BaseException:
    """The innermost cause ("Connection refused"), not the client's generic "Connection error"."""
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


@contextmanager
def endpoint_errors(url: str) -> Iterator[None]:
    """Re-raise the OpenAI client's transport and HTTP errors as :class:`EndpointError`."""
    try:
        yield
    except openai.APITimeoutError as exc:  # subclass of APIConnectionError: test it first
        raise EndpointError(
            url,
            "request timed out (see the role's timeout option)",
            public="the model endpoint timed out",
        ) from exc
    except openai.APIConnectionError as exc:
        raise EndpointError(
            url, f"cannot connect: {_root_cause(exc)}", public="the model endpoint is unreachable"
        ) from exc
    except openai.APIStatusError as exc:
        raise EndpointError(
            url, f"HTTP {exc.status_code}: {exc.message}", status_code=exc.status_code
        ) from exc


def _retryable(exc: EndpointError) -> bool:
    """Connection failures, timeouts, 408/409/429 and 5xx are worth another try; 4xx are not."""
    code = exc.status_code
    return code is None or code in (408, 409, 429) or code >= 500


class EndpointChatOpenAI(ChatOpenAI):
    """``ChatOpenAI`` whose failures are typed :class:`EndpointError` naming the endpoint.

    Structured output goes through function calling (``structured_mode = "tools"``): llama.cpp's
    server rejects ``json_schema`` response formats, tool calls work on every compatible server.

    **One deadline per call.** The OpenAI client's own retries multiply its timeout (60 s x 3 =
    186 s before a hung endpoint fails); here the client makes one attempt and this class retries
    (``attempts`` in all) with back-off, each attempt's timeout cut to what is left of
    ``deadline`` seconds. A call never takes longer than ``deadline`` (plus the last
    attempt's connection set-up). Streams are retried only before their first chunk.

    **Sampling per call.** Every parameter of :data:`~mmagents.models.sampling.SAMPLING_PARAMS`
    passed to ``invoke`` is forwarded in that request (``max_tokens`` as ``max_completion_tokens``,
    and as the classic ``max_tokens`` too where :func:`make_chat` sends it for other servers).
    """

    sampling_params: ClassVar[frozenset[str]] = SAMPLING_PARAMS

    structured_mode: str = Field(default="tools", exclude=True)
    deadline: float = Field(default=90.0, gt=0, exclude=True)
    attempts: int = Field(default=3, ge=1, exclude=True)

    @property
    def endpoint(self) -> str:
        """The base URL requests go to."""
        return self.openai_api_base or DEFAULT_BASE_URL

    def _get_request_payload(
        self, input_: Any, *, stop: list[str] | None = None, **kwargs: Any
    ) -> dict[str, Any]:
        limit = kwargs.get("max_tokens")
        payload: dict[str, Any] = super()._get_request_payload(input_, stop=stop, **kwargs)
        extra = payload.get("extra_body")
        if limit is not None and isinstance(extra, dict) and "max_tokens" in extra:
            payload["extra_body"] = {**extra, "max_tokens": limit}  # this call's, not the config's
        return payload

    def _attempt_timeout(self, ends: float) -> float:
        per_attempt = self.request_timeout if isinstance(self.request_timeout, int | float) else 60
        return max(0.1, min(float(per_attempt), ends - time.monotonic()))

    def _again(self, exc: EndpointError, attempt: int, ends: float) -> float | None:
        """Seconds to wait before the next attempt, or ``None`` to give up."""
        pause = min(0.5 * 2**attempt, 8.0)
        if not _retryable(exc) or attempt + 1 >= self.attempts:
            return None
        if time.monotonic() + pause + 0.1 >= ends:
            return None
        return pause

    def _generate(self, *args: Any, **kwargs: Any) -> ChatResult:
        ends = time.monotonic() + self.deadline
        for attempt in range(self.attempts):
            try:
                with endpoint_errors(self.endpoint):
                    kwargs["timeout"] = self._attempt_timeout(ends)
                    return super()._generate(*args, **kwargs)
            except EndpointError as exc:
                pause = self._again(exc, attempt, ends)
                if pause is None:
                    raise
                time.sleep(pause)
        raise AssertionError("unreachable: the last attempt raises or returns")

    async def _agenerate(self, *args: Any, **kwargs: Any) -> ChatResult:
        ends = time.monotonic() + self.deadline
        for attempt in range(self.attempts):
            try:
                with endpoint_errors(self.endpoint):
                    kwargs["timeout"] = self._attempt_timeout(ends)
                    return await super()._agenerate(*args, **kwargs)
            except EndpointError as exc:
                pause = self._again(exc, attempt, ends)
                if pause is None:
                    raise
                await asyncio.sleep(pause)
        raise AssertionError("unreachable: the last attempt raises or returns")

    def _stream(self, *args: Any, **kwargs: Any) -> Iterator[ChatGenerationChunk]:
        ends = time.monotonic() + self.deadline
        for attempt in range(self.attempts):
            started = False
            try:
                with endpoint_errors(self.endpoint):
                    kwargs["timeout"] = self._attempt_timeout(ends)
                    for chunk in super()._stream(*args, **kwargs):
                        started = True
                        yield chunk
                    return
            except EndpointError as exc:
                pause = None if started else self._again(exc, attempt, ends)
                if pause is None:
                    raise
                time.sleep(pause)

    async def _astream(self, *args: Any, **kwargs: Any) -> AsyncIterator[ChatGenerationChunk]:
        ends = time.monotonic() + self.deadline
        for attempt in range(self.attempts):
            started = False
            try:
                with endpoint_errors(self.endpoint):
                    kwargs["timeout"] = self._attempt_timeout(ends)
                    async for chunk in super()._astream(*args, **kwargs):
                        started = True
                        yield chunk
                    return
            except EndpointError as exc:
                pause = None if started else self._again(exc, attempt, ends)
                if pause is None:
                    raise
                await asyncio.sleep(pause)


def make_chat(
    *,
    base_url: str | None,
    model: str,
    api_key: str | None,
    temperature: float,
    max_tokens: int,
    timeout: float,
    max_retries: int,
    deadline: float = 90.0,
    cache: bool | None = None,
) -> EndpointChatOpenAI:
    """Build the chat model for one endpoint (see ``build_openai_chat`` for the options)."""
    url = (base_url or os.environ.get("OPENAI_BASE_URL") or DEFAULT_BASE_URL).rstrip("/")
    options: dict[str, Any] = {
        "base_url": url,
        "model": model,
        "api_key": SecretStr(resolve_api_key(api_key, url)),
        "temperature": temperature,
        "max_completion_tokens": max_tokens,
        "timeout": timeout,
        # Retries are ours, under one deadline (see EndpointChatOpenAI); the client tries once.
        "max_retries": 0,
        "attempts": max_retries + 1,
        "deadline": deadline,
        "cache": cache,
    }
    if urlparse(url).hostname != "api.openai.com":
        # LangChain sends OpenAI's new max_completion_tokens only; llama.cpp's server ignores it
        # and Ollama predates it, so the classic field goes along for other servers.
        options["extra_body"] = {"max_tokens": max_tokens}
    return EndpointChatOpenAI(**options)
