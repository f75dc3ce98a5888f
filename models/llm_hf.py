"""llm backend ``hf``: a transformers causal LM driven through its tokenizer's chat template.

``model`` is a hub id or a local folder (``save_pretrained`` output); the weights load on the first
call, once per process, and generation holds a lock (one ``generate`` at a time per model).
Structured output is prompted: :func:`~mmagents.models.structured.invoke_structured` puts the JSON
schema in the system prompt, parses tolerantly and repairs.
"""

from __future__ import annotations

from typing import Any, ClassVar

from langchain_core.callbacks import CallbackManagerForLLMRun
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import ConfigDict, Field

from mmagents.errors import BackendError, BackendUnavailableError
from mmagents.models._hub import (
    Loaded,
    dtype_option,
    load_once,
    loading,
    require,
    resolve_device,
    resolve_dtype,
)
from mmagents.models.llm_llamacpp import to_llama_messages

__all__ = ["HFChat"]


def _load(model: str, device: str, dtype: str | None) -> Loaded:
    transformers = require("transformers")
    torch_dtype = resolve_dtype(dtype, device)
    with loading("causal LM", model):
        tokenizer = transformers.AutoTokenizer.from_pretrained(model)
        lm = transformers.AutoModelForCausalLM.from_pretrained(model, **dtype_option(torch_dtype))
    if not getattr(tokenizer, "chat_template", None):
        raise BackendUnavailableError(
            f"{model!r} has no chat template: it is a base model, not an instruction-tuned chat "
            "model, and cannot play the llm role"
        )
    lm.to(device).eval()
    return Loaded(lm, {"tokenizer": tokenizer}, device)


def _cut_at_stop(text: str, stop: list[str] | None) -> str:
    cuts = [i for s in stop or [] if (i := text.find(s)) != -1]
    return text[: min(cuts)] if cuts else text


class HFChat(BaseChatModel):
    """LangChain chat model over a transformers ``AutoModelForCausalLM``.

    Args:
        model: Hub id (``HuggingFaceTB/SmolLM2-1.7B-Instruct``) or local folder.
        max_new_tokens: Maximum new tokens per call.
        temperature: 0 decodes greedily (reproducible); above 0 samples.
        top_p: Nucleus sampling mass when sampling.
        seed: Seed set before sampling, for reproducible runs.
        device: ``auto`` (CUDA, then MPS, then CPU), ``cpu``, ``cuda:0`` ...
        dtype: ``auto`` (bf16/fp16 on accelerators, fp32 on the CPU), ``fp32``, ``bf16``, ``fp16``.

    Per call (``invoke(..., temperature=0.7)``) it honours ``temperature``, ``top_p``,
    ``max_tokens`` (as ``max_new_tokens``), ``stop`` and ``seed``; transformers has no
    OpenAI-style presence / frequency penalties, so those are not declared.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, protected_namespaces=())
    sampling_params: ClassVar[frozenset[str]] = frozenset(
        {"temperature", "top_p", "max_tokens", "stop", "seed"}
    )

    model: str
    max_new_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 0.95
    seed: int = 0
    device: str = "auto"
    dtype: str = "auto"
    structured_mode: str = Field(default="prompt", exclude=True)

    @property
    def _llm_type(self) -> str:
        return "hf-transformers"

    @property
    def _identifying_params(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p,
            "seed": self.seed,
        }

    def loaded(self) -> Loaded:
        """The model and tokenizer, loaded on first use (once per process per model/device/dtype).

        Raises:
            BackendUnavailableError: transformers is missing, the model cannot be found, or it has
                no chat template.
        """
        device = resolve_device(self.device)
        key = ("llm-hf", self.model, device, self.dtype)
        return load_once(key, lambda: _load(self.model, device, self.dtype))

    def _generation_kwargs(self, kwargs: dict[str, Any], tokenizer: Any) -> dict[str, Any]:
        temperature = kwargs.get("temperature", self.temperature)
        options: dict[str, Any] = {
            "max_new_tokens": self._limit(kwargs),
            "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id,
        }
        if temperature > 0:
            top_p = kwargs.get("top_p", self.top_p)
            options.update(do_sample=True, temperature=temperature, top_p=top_p)
        else:
            options.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        return options

    def _limit(self, kwargs: dict[str, Any]) -> int:
        """This call's new-token limit: ``max_tokens`` (OpenAI's name) or ``max_new_tokens``."""
        return int(kwargs.get("max_tokens", kwargs.get("max_new_tokens", self.max_new_tokens)))

    def _generate(
        self,
        messages: list[BaseMessage],
        stop: list[str] | None = None,
        run_manager: CallbackManagerForLLMRun | None = None,
        **kwargs: Any,
    ) -> ChatResult:
        torch = require("torch", extra="offline")
        loaded = self.loaded()
        tokenizer = loaded.extras["tokenizer"]
        inputs = tokenizer.apply_chat_template(
            to_llama_messages(messages),
            add_generation_prompt=True,
            return_tensors="pt",
            return_dict=True,
        ).to(loaded.device)
        prompt_length = inputs["input_ids"].shape[1]
        try:
            with loaded.lock, torch.inference_mode():
                torch.manual_seed(kwargs.get("seed", self.seed))
                output = loaded.model.generate(
                    **inputs, **self._generation_kwargs(kwargs, tokenizer)
                )
        except (RuntimeError, ValueError) as exc:  # out of memory, context too long ...
            raise BackendError(f"generation with {self.model!r} failed: {exc}") from exc
        new_tokens = output[0, prompt_length:]
        decoded = tokenizer.decode(new_tokens, skip_special_tokens=True)
        text = _cut_at_stop(decoded, stop)
        count = int(new_tokens.shape[0])
        ended = count and int(new_tokens[-1]) == tokenizer.eos_token_id
        finish = "stop" if text != decoded or ended or count < self._limit(kwargs) else "length"
        message = AIMessage(
            content=text.strip(),
            response_metadata={
                "model": self.model,
                "model_provider": "hf",
                "finish_reason": finish,
            },
            usage_metadata={
                "input_tokens": prompt_length,
                "output_tokens": int(new_tokens.shape[0]),
                "total_tokens": prompt_length + int(new_tokens.shape[0]),
            },
        )
        return ChatResult(generations=[ChatGeneration(message=message)])
