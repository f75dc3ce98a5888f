"""IdealGPT's published rules (You et al., 2023; reference code Hxyou/IdealGPT) as pure functions.

The ``paper`` protocol of the IdealGPT graph uses these; each is checked against values worked out
by hand from the reference code in ``tests/test_paper_idealgpt.py``. References are to
``chat/vcr_conv.py`` and ``chat/ve_conv.py`` at commit 1882619 / b2ff949 (``docs/reproduce.md``
holds the full table). The reference's prompts (``chat/vcr_prompt.py``, ``chat/ve_prompt.py``)
are kept word for word in ``prompts/idealgpt_paper_{vcr,snli_ve}.yaml``; :func:`ask` and
:func:`reason` make the questioner and reasoner calls the way the reference does.

Rules:
    * VQA prompt for BLIP-2: ``"Question: {q} Answer:"``, decoded with ``max_length=10`` and
      ``length_penalty=-1``; the answer is cut at a following ``"Question:"``, newlines become
      spaces. The caption prompt is ``"a photo of"``.
    * Choices are listed ``"Answer {i}: {text}"`` (1-based), after ``"Imperfect Caption: …"`` and
      ``"Main Question: …"`` (VCR, "Four choices") or ``"Hypothesis: …"`` (SNLI-VE, "Three
      choices"); the reasoner sees every sub-question and answer so far, flattened in order.
    * Sub-questions: every ``"Sub-question…:"`` line, any number of them.
    * The reasoner's reply must hold an ``"Analysis:"`` line and a ``"More Likely Answer:"``; if
      either is missing the call is rerun (VCR up to 15 tries with a temperature that rises after
      half of them; SNLI-VE up to 10 at the same temperature) and the sample fails after the last.
    * The answer is the last ``"More Likely Answer:"``: "not sure" (before the final round) is no
      answer; VCR then takes the first integer (the choice number), SNLI-VE strips punctuation and
      keeps it only when it equals a choice exactly.
    * The loop stops as soon as the answer is a valid choice (VCR "1"-"4", SNLI-VE a choice);
      confidence plays no part. The final round uses the final-reasoner system prompt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal

from langchain_core.messages import BaseMessage, HumanMessage, SystemMessage

from mmagents.errors import StructuredOutputError
from mmagents.prompts import load_prompt

__all__ = [
    "BLIP2_ANSWER_OPTIONS",
    "CAPTION_PROMPT",
    "MAX_TRIES",
    "Task",
    "ask",
    "asker_input",
    "blip2_question",
    "format_choices",
    "more_asker_input",
    "parse_reasoner",
    "parse_subquestions",
    "prompt_role",
    "reason",
    "reasoner_input",
    "rerun_temperatures",
    "should_stop",
    "trim_answer",
]

Task = Literal["vcr", "snli-ve"]

#: BLIP-2 decoding of sub-answers (vcr_conv.py:153 passes these to LAVIS ``predict_answers``).
BLIP2_ANSWER_OPTIONS = {"max_length": 10, "length_penalty": -1.0}
#: Caption prompt of BLIP-2 (lib/blip2_lib.py:23 default, misc/blip_caption.py prompt v1).
CAPTION_PROMPT = "a photo of"
#: Reasoner tries per round (vcr_conv.py:294, ve_conv.py:226).
MAX_TRIES: dict[str, int] = {"vcr": 15, "snli-ve": 10}
#: VCR's valid choice numbers (vcr_eval.py answer_map; the loop's ANSWER_MAP).
VCR_ANSWERS = ("1", "2", "3", "4")

_SUBQUESTION = re.compile(r"Sub-question.{0,3}:(.*)\n")
_ANALYSIS = re.compile(r"Analysis:(.*)\n")
_ANSWER = re.compile(r"More Likely Answer:(.*?)(?=\n|$)")


def blip2_question(question: str) -> str:
    """The BLIP-2 VQA prompt for one sub-question."""
    return "Question: placeholder Answer:".replace("placeholder", question)


def trim_answer(answer: str) -> str:
    """Cut a VQA answer at a following ``"Question:"`` and flatten newlines."""
    return answer.split("Question:")[0].replace("\n", " ").strip()


def format_choices(choices: Sequence[str]) -> str:
    """``"Answer 1: …\\nAnswer 2: …\\n"``: the choices as the reference lists them."""
    return "".join(f"Answer {i}: {text}\n" for i, text in enumerate(choices, start=1))


def _header(task: Task) -> tuple[str, str]:
    return (
        ("Hypothesis", "Three choices") if task == "snli-ve" else ("Main Question", "Four choices")
    )


def _sub_qa(sub_questions: Sequence[Sequence[str]], sub_answers: Sequence[Sequence[str]]) -> str:
    questions = [q for round_ in sub_questions for q in round_]
    answers = [a for round_ in sub_answers for a in round_]
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} sub-questions but {len(answers)} answers")
    return "".join(
        f"Sub-question: {q} Answer: {a}\n" for q, a in zip(questions, answers, strict=True)
    )


def asker_input(task: Task, caption: str, question: str, choices: Sequence[str]) -> str:
    """First-round questioner input (replaces ``[placeholder]`` in the reference's prompt)."""
    main, count = _header(task)
    return f"Imperfect Caption: {caption}\n{main}: {question}\n{count}:\n{format_choices(choices)}"


def more_asker_input(
    task: Task,
    caption: str,
    question: str,
    choices: Sequence[str],
    sub_questions: Sequence[Sequence[str]],
    sub_answers: Sequence[Sequence[str]],
    analysis: str,
) -> str:
    """Later-round questioner input: everything asked so far plus the last analysis."""
    main, count = _header(task)
    return (
        f"Imperfect Caption: {caption}\n{main}: {question}\n{count}: \n{format_choices(choices)}"
        f" Sub-questions and answers: \n{_sub_qa(sub_questions, sub_answers)} Analysis: \n{analysis}"
    )


def reasoner_input(
    task: Task,
    caption: str,
    question: str,
    choices: Sequence[str],
    sub_questions: Sequence[Sequence[str]],
    sub_answers: Sequence[Sequence[str]],
) -> str:
    """Reasoner input: the question, the choices and every sub-question/answer so far."""
    main, count = _header(task)
    return (
        f"Imperfect Caption: {caption}\n{main}: {question}\n{count}: \n{format_choices(choices)}"
        f" Existing Sub-questions and answers: \n{_sub_qa(sub_questions, sub_answers)}"
    )


def parse_subquestions(reply: str) -> list[str]:
    """Every ``Sub-question…: text`` line, in order, however many there are.

    Like the reference, the search resumes after the first occurrence of the text just found. An
    empty sub-question ends the list (the reference's ``str.split("")`` would raise there).
    """
    text, found = reply + "\n", []
    while (match := _SUBQUESTION.search(text)) is not None:
        question = match.group(1)
        if not question:
            break
        found.append(question.strip())
        text = text.split(question)[1]
    return found


def parse_reasoner(
    reply: str, task: Task, choices: Sequence[str], *, final_round: bool
) -> tuple[str, str | None]:
    """``(analysis, answer)`` from a reasoner reply; ``answer`` is ``None`` when undecided.

    Raises:
        StructuredOutputError: no ``Analysis:`` line or no ``More Likely Answer:`` (the reference
            reruns the call on this).
    """
    analysis = _ANALYSIS.search(reply)
    matches = _ANSWER.findall(reply)
    if analysis is None or not matches:
        missing = "Analysis:" if analysis is None else "More Likely Answer:"
        raise StructuredOutputError("idealgpt-reasoner", reply, 1, f"no {missing!r} found")
    stated = str(matches[-1]).strip()
    answer: str | None = None if not final_round and "not sure" in stated.lower() else stated
    if answer is not None:
        if task == "vcr":
            number = re.search(r"\d+", answer)
            answer = number.group(0) if number else None
        else:
            answer = re.sub(r"[^\w\s]", "", answer)
            answer = answer if answer in choices else None
    return analysis.group(1).strip(), answer


def should_stop(answer: str | None, task: Task, choices: Sequence[str]) -> bool:
    """The loop's stop rule: the answer is a valid choice (no confidence threshold)."""
    if task == "vcr":
        return answer in VCR_ANSWERS
    return answer in choices


def rerun_temperatures(base: float, task: Task) -> list[float]:
    """The temperature of each reasoner try, first to last.

    VCR (vcr_conv.py:302-305): tries past half of 15 use ``base + 0.1 * (2 * try / 15 - 1)``;
    SNLI-VE (ve_conv.py:234) keeps ``base`` for all 10.
    """
    tries = MAX_TRIES[task]
    if task != "vcr":
        return [base] * tries
    return [
        base + 0.1 * ((2.0 * n / tries) - 1) if n > tries / 2 else base for n in range(1, tries + 1)
    ]


def prompt_role(task: Task) -> str:
    """The prompt file holding the reference's prompts for ``task``."""
    return "idealgpt_paper_snli_ve" if task == "snli-ve" else "idealgpt_paper_vcr"


def _messages(task: Task, variant: str, text: str) -> list[BaseMessage]:
    parts = load_prompt(prompt_role(task)).variants[variant]
    # The reference sends the system prompt as is and puts the input where "[placeholder]" is.
    return [
        SystemMessage(content=parts["system"]),
        HumanMessage(content=parts["user"].replace("[placeholder]", text)),
    ]


def ask(
    llm: Any,
    task: Task,
    caption: str,
    question: str,
    choices: Sequence[str],
    sub_questions: Sequence[Sequence[str]],
    sub_answers: Sequence[Sequence[str]],
    analysis: str | None,
) -> list[str]:
    """One questioner call as the reference makes it (first round, or later with the analysis)."""
    if not sub_questions:
        messages = _messages(task, "init_asker", asker_input(task, caption, question, choices))
    else:
        text = more_asker_input(
            task, caption, question, choices, sub_questions, sub_answers, analysis or ""
        )
        messages = _messages(task, "more_asker", text)
    return parse_subquestions(str(llm.invoke(messages).content))


def reason(
    llm: Any,
    task: Task,
    caption: str,
    question: str,
    choices: Sequence[str],
    sub_questions: Sequence[Sequence[str]],
    sub_answers: Sequence[Sequence[str]],
    *,
    final_round: bool,
    base_temperature: float,
) -> tuple[str, str | None, int]:
    """``(analysis, answer, calls)``: the reasoner, rerun until its reply parses.

    Raises:
        StructuredOutputError: no reply parsed within the task's tries (the reference raises).
    """
    text = reasoner_input(task, caption, question, choices, sub_questions, sub_answers)
    messages = _messages(task, "final_reasoner" if final_round else "reasoner", text)
    reply = ""
    temperatures = rerun_temperatures(base_temperature, task)
    for calls, temperature in enumerate(temperatures, start=1):
        model = llm if temperature == base_temperature else llm.bind(temperature=temperature)
        reply = str(model.invoke(messages).content)
        try:
            analysis, answer = parse_reasoner(reply, task, choices, final_round=final_round)
        except StructuredOutputError:
            continue
        return analysis, answer, calls
    raise StructuredOutputError(
        "idealgpt-reasoner",
        reply,
        len(temperatures),
        "Rerun too many times, still failed in parsing.",
    )
