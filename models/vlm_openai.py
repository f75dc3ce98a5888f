"""vlm backend ``openai``: vision chat on any OpenAI-compatible endpoint that accepts image parts.

Each call sends one chat request whose user turn holds the instruction (``prompts/vlm_chat.yaml``)
and the image as a base64 ``data:`` URL, so no image ever needs a public address. Failures are
:class:`~mmagents.errors.EndpointError` naming the URL; requests time out instead of hanging.
"""

from __future__ import annotations

import base64
import io
import threading
from typing import TYPE_CHECKING, Any

from mmagents.errors import BackendError
from mmagents.models._hub import require
from mmagents.prompts import load_prompt

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["OpenAIVLM", "image_data_url"]

_FORMATS = {"jpeg": "JPEG", "jpg": "JPEG", "png": "PNG", "webp": "WEBP"}


def image_data_url(image: Image.Image, fmt: str = "jpeg", max_side: int | None = 1024) -> str:
    """Encode ``image`` as a ``data:image/...;base64,`` URL, shrunk to ``max_side`` pixels.

    Raises:
        BackendError: an unsupported format name.
    """
    try:
        pil_format = _FORMATS[fmt.lower()]
    except KeyError:
        raise BackendError(f"unsupported image format {fmt!r}; use {sorted(_FORMATS)}") from None
    image = image.convert("RGB")
    if max_side and max(image.size) > max_side:
        image = image.copy()
        image.thumbnail((max_side, max_side))  # keeps the aspect ratio; saves upload and tokens
    buffer = io.BytesIO()
    image.save(buffer, format=pil_format, **({"quality": 90} if pil_format == "JPEG" else {}))
    encoded = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f"data:image/{pil_format.lower()};base64,{encoded}"


class OpenAIVLM:
    """Captions and answers through an OpenAI-compatible vision chat endpoint.

    Args:
        base_url: The API root (default ``$OPENAI_BASE_URL``, else OpenAI's).
        model: A vision-capable model name (``gpt-4o-mini``, a vLLM-served Qwen2-VL ...).
        api_key: As for the ``openai`` llm backend.
        temperature: Sampling temperature (0: the most likely answer).
        max_tokens: Maximum new tokens per answer.
        timeout: Seconds before a request is abandoned.
        max_retries: Retries on connection errors and 429/5xx answers.
        image_format: ``jpeg`` (small, photos) or ``png`` (lossless, text and diagrams).
        max_side: Longest image side sent, in pixels (``None``: as is).
        detail: OpenAI's image detail hint: ``auto``, ``low`` or ``high``.
    """

    name = "openai-vlm"

    def __init__(
        self,
        *,
        base_url: str | None = None,
        model: str = "gpt-4o-mini",
        api_key: str | None = None,
        temperature: float = 0.0,
        max_tokens: int = 256,
        timeout: float = 60.0,
        max_retries: int = 2,
        image_format: str = "jpeg",
        max_side: int | None = 1024,
        detail: str = "auto",
    ) -> None:
        self._options: dict[str, Any] = {
            "base_url": base_url,
            "model": model,
            "api_key": api_key,
            "temperature": temperature,
            "max_tokens": max_tokens,
            "timeout": timeout,
            "max_retries": max_retries,
        }
        self.image_format = image_format
        self.max_side = max_side
        #: Images are shrunk to ``max_side`` before sending: a store copy twice that is enough.
        self.working_side = 2 * max_side if max_side else None
        self.detail = detail
        self._chat: Any = None
        self._lock = threading.Lock()

    def _client(self) -> Any:
        with self._lock:
            if self._chat is None:
                support = require("mmagents.models._openai", package="langchain-openai")
                # The vlm role is cached by the model-call cache wrapper; LangChain's llm cache
                # would store every base64 image a second time.
                self._chat = support.make_chat(**self._options, cache=False)
            return self._chat

    def messages(self, variant: str, image: Image.Image, **variables: Any) -> list[Any]:
        """The chat messages sent for ``variant`` (``caption`` or ``answer``) of ``image``."""
        from langchain_core.messages import HumanMessage, SystemMessage

        parts = load_prompt("vlm_chat").render(variant, **variables)
        url = image_data_url(image, self.image_format, self.max_side)
        content: list[str | dict[str, Any]] = [
            {"type": "text", "text": parts["user"]},
            {"type": "image_url", "image_url": {"url": url, "detail": self.detail}},
        ]
        return [SystemMessage(content=parts["system"]), HumanMessage(content=content)]

    def _ask(self, variant: str, image: Image.Image, **variables: Any) -> str:
        reply = self._client().invoke(self.messages(variant, image, **variables))
        return str(reply.text).strip()

    def caption(self, image: Image.Image) -> str:
        """One-sentence description of ``image``.

        Raises:
            EndpointError: the endpoint is unreachable, timed out or answered with an error.
        """
        return self._ask("caption", image)

    def answer(self, image: Image.Image, question: str) -> str:
        """Short answer to ``question`` about ``image``.

        Raises:
            EndpointError: the endpoint is unreachable, timed out or answered with an error.
        """
        return self._ask("answer", image, question=question)
