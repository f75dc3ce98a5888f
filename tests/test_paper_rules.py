"""Parity tests: each paper-protocol rule on fixed inputs, expected values worked out by hand.

The expected strings and numbers below were derived by reading the reference code (cited beside
each test), not by running our functions.
"""

from __future__ import annotations

import pytest

from mmagents.errors import StructuredOutputError
from mmagents.graphs import _describe_paper as describe
from mmagents.graphs import _idealgpt_paper as ideal
from mmagents.models.memes import _mrharm_paper as mrharm

CHOICES_VCR = ["He is thirsty.", "He is cold.", "He is lost.", "He is late."]
CHOICES_VE = ["entailment", "neutral", "contradiction"]


# --- IdealGPT (Hxyou/IdealGPT chat/vcr_conv.py, chat/ve_conv.py) -------------------------------


def test_blip2_question_and_answer_trim() -> None:
    # vcr_conv.py:53 'Question: placeholder Answer:'; :162-164 split at 'Question:', \n -> ' '.
    assert ideal.blip2_question("what is he holding?") == "Question: what is he holding? Answer:"
    assert ideal.trim_answer(" a cup\nof tea Question: why?") == "a cup of tea"
    assert ideal.BLIP2_ANSWER_OPTIONS == {"max_length": 10, "length_penalty": -1.0}
    assert ideal.CAPTION_PROMPT == "a photo of"


def test_inputs_list_choices_one_based_and_flatten_rounds() -> None:
    # vcr_conv.py:70, :73, :99, :132; ve_conv.py:41.
    assert ideal.asker_input("vcr", "a man", "Why?", ["a", "b"]) == (
        "Imperfect Caption: a man\nMain Question: Why?\nFour choices:\nAnswer 1: a\nAnswer 2: b\n"
    )
    assert ideal.asker_input("snli-ve", "a dog", "An animal.", CHOICES_VE).startswith(
        "Imperfect Caption: a dog\nHypothesis: An animal.\nThree choices:\nAnswer 1: entailment\n"
    )
    text = ideal.reasoner_input(
        "vcr", "c", "q?", ["x"], [["s1", "s2"], ["s3"]], [["a1", "a2"], ["a3"]]
    )
    assert text == (
        "Imperfect Caption: c\nMain Question: q?\nFour choices: \nAnswer 1: x\n"
        " Existing Sub-questions and answers: \n"
        "Sub-question: s1 Answer: a1\nSub-question: s2 Answer: a2\nSub-question: s3 Answer: a3\n"
    )
    more = ideal.more_asker_input("vcr", "c", "q?", ["x"], [["s1"]], [["a1"]], "unclear")
    assert more.endswith(
        " Sub-questions and answers: \nSub-question: s1 Answer: a1\n Analysis: \nunclear"
    )


def test_subquestions_any_number() -> None:
    reply = (
        "Sub-question 1: Who is on the left?\nSub-question 2: What is he holding?\n"
        "Sub-question 3: Is it raining?\nSub-question 4: Where are they?"
    )
    # vcr_conv.py:166-177: every match, no cap (the example reply asks four).
    assert ideal.parse_subquestions(reply) == [
        "Who is on the left?",
        "What is he holding?",
        "Is it raining?",
        "Where are they?",
    ]
    assert ideal.parse_subquestions("No questions.") == []


def test_reasoner_answer_is_the_choice_number() -> None:
    reply = "Analysis: He holds a cup.\nMore Likely Answer: Answer 2: He is cold."
    # vcr_conv.py:181-213: analysis up to the newline; first integer of the last answer line.
    assert ideal.parse_reasoner(reply, "vcr", CHOICES_VCR, final_round=False) == (
        "He holds a cup.",
        "2",
    )
    two = "Analysis: x\nMore Likely Answer: 1\nMore Likely Answer: I pick 3 over 4"
    assert ideal.parse_reasoner(two, "vcr", CHOICES_VCR, final_round=False)[1] == "3"


def test_not_sure_is_no_answer_only_before_the_final_round() -> None:
    reply = "Analysis: unclear.\nMore Likely Answer: Not sure, maybe 2"
    assert ideal.parse_reasoner(reply, "vcr", CHOICES_VCR, final_round=False)[1] is None
    # In the final round 'not sure' is not checked: the first integer (2) is taken.
    assert ideal.parse_reasoner(reply, "vcr", CHOICES_VCR, final_round=True)[1] == "2"
    no_number = "Analysis: unclear.\nMore Likely Answer: none of them"
    assert ideal.parse_reasoner(no_number, "vcr", CHOICES_VCR, final_round=True)[1] is None


def test_missing_analysis_or_answer_asks_for_a_rerun() -> None:
    for reply in ("More Likely Answer: 1", "Analysis: x More Likely Answer: 1", "Analysis: x\n"):
        with pytest.raises(StructuredOutputError):
            ideal.parse_reasoner(reply, "vcr", CHOICES_VCR, final_round=False)


def test_snli_ve_answer_strips_punctuation_and_must_match_exactly() -> None:
    # ve_conv.py:135-140: re.sub(r'[^\w\s]', '') then exact membership (case-sensitive).
    reply = "Analysis: a dog is an animal.\nMore Likely Answer: entailment."
    assert ideal.parse_reasoner(reply, "snli-ve", CHOICES_VE, final_round=False)[1] == "entailment"
    upper = "Analysis: a.\nMore Likely Answer: Contradiction"
    assert ideal.parse_reasoner(upper, "snli-ve", CHOICES_VE, final_round=False)[1] is None


def test_stop_rule_needs_only_a_valid_choice() -> None:
    # vcr_conv.py:226-230 (ANSWER_MAP '1'..'4'); ve_conv.py:158-162 (answer in choices).
    assert ideal.should_stop("3", "vcr", CHOICES_VCR)
    assert not ideal.should_stop(None, "vcr", CHOICES_VCR)
    assert not ideal.should_stop("5", "vcr", CHOICES_VCR)
    assert ideal.should_stop("neutral", "snli-ve", CHOICES_VE)
    assert not ideal.should_stop("Neutral", "snli-ve", CHOICES_VE)


def test_rerun_temperatures() -> None:
    # vcr_conv.py:294-305: 15 tries; try n > 7.5 uses base + 0.1 * (2n/15 - 1).
    temps = ideal.rerun_temperatures(0.0, "vcr")
    assert len(temps) == 15 and temps[:7] == [0.0] * 7
    expected_tail = [0.1 * (2 * n / 15 - 1) for n in range(8, 16)]  # 1/150, 3/150, ..., 15/150
    assert temps[7:] == pytest.approx(expected_tail)
    assert temps[7] == pytest.approx(1 / 150) and temps[-1] == pytest.approx(0.1)
    # ve_conv.py:226-234: 10 tries at the same temperature.
    assert ideal.rerun_temperatures(0.2, "snli-ve") == [0.2] * 10


# --- Classification by description (classify_by_description_release) ---------------------------


def test_imagenet_texts_end_with_a_full_stop() -> None:
    # load.py:101 after_text = label_after_text = '.' (ImageNet only); loading_helpers.py:20-28,64.
    suffix = describe.suffix_for("imagenet")
    assert suffix == "." and describe.suffix_for("cub") == ""
    assert describe.class_texts(
        "tench", ["a freshwater fish", "olive green or brown in color"], suffix
    ) == [
        "tench, which is a freshwater fish.",
        "tench, which has olive green or brown in color.",
    ]
    assert describe.class_texts("great_grey_owl", ["has large eyes", "used for hunting"], "") == [
        "great grey owl, which has large eyes",
        "great grey owl, which is used for hunting",
    ]
    # A word starting with the letter a takes "which is" (the reference tests startswith('a')).
    assert describe.class_texts("ant", ["antennae"], ".") == ["ant, which is antennae."]
    assert describe.class_texts("tench", [], ".") == ["tench, which has ."]
    assert describe.label_text("tench", ".") == "tench."


def test_descriptor_prompt_is_the_published_two_example_prompt() -> None:
    # generate_descriptors.py:12-38, class 'lesser_panda' -> 'lesser panda' (line 51).
    prompt = describe.descriptor_prompt("lesser_panda")
    assert prompt.startswith(
        "Q: What are useful visual features for distinguishing a lemur in a photo?\n"
        "A: There are several useful visual features to tell there is a lemur in a photo:\n"
        "- four-limbed primate\n"
    )
    assert "- input ports for connecting to other devices\n- a remote control\n\n" in prompt
    assert prompt.endswith(
        "Q: What are useful features for distinguishing a lesser panda in a photo?\n"
        "A: There are several useful visual features to tell there is a lesser panda in a photo:\n"
        "-\n"
    )
    assert (
        prompt.count("\n") == 24
    )  # 24 lines (generate_descriptors.py:14-37), each ending in a newline
    # descriptor_strings.py:1-2 stringtolist: only lines starting with '- '.
    assert describe.parse_descriptors(" black and white\n- round ears\n-bad\n- a bushy tail\n") == [
        "round ears",
        "a bushy tail",
    ]


# --- Mr.Harm (HKBUNLP/Mr.Harm-EMNLP2023) -------------------------------------------------------


class _WordTokenizer:
    """A whitespace tokenizer with T5's conventions: pad 0, eos 1, eos appended, pad to length."""

    def __call__(self, text: str, *, padding: str, truncation: bool, max_length: int) -> dict:
        vocab: dict[str, int] = {}
        ids = [vocab.setdefault(w, 2 + len(vocab)) for w in text.split()]
        ids = [*ids[: max_length - 1], 1]  # truncation keeps room for </s>, as T5's tokenizer
        mask = [1] * len(ids)
        pad = max_length - len(ids)
        return {"input_ids": ids + [0] * pad, "attention_mask": mask + [0] * pad}


def test_mrharm_targets_and_truncation() -> None:
    # base_dataset.py:66 text.lower(); :80 'The answer is: ' + label; :94 'Output: ' + rationale.
    assert mrharm.input_text("Vote for HIM") == "vote for him"
    assert mrharm.rationale_target("The Text MOCKS him.") == "Output: the text mocks him."
    assert mrharm.label_target("Harmful") == "The answer is: harmful"
    assert mrharm.parse_label("The answer is: harmless") == "harmless"
    assert mrharm.parse_label("Output: x The answer is: harmful ") == "harmful"
    # config.py:90 max_text_len = 40 (task_train); base_dataset.py:67-73 pad + truncate.
    ids, mask = mrharm.encode(_WordTokenizer(), " ".join(["w"] * 50), mrharm.MAX_TEXT_TOKENS)
    assert len(ids) == 40 and sum(mask) == 40 and ids[-1] == 1
    ids, mask = mrharm.encode(_WordTokenizer(), "the answer is: harmful", mrharm.MAX_LABEL_TOKENS)
    assert len(ids) == 32 and sum(mask) == 5
    # mm_module.py:71 label_ids[label_ids == 0] = -100
    assert mrharm.loss_labels([5, 6, 1, 0, 0]) == [5, 6, 1, -100, -100]


def test_mrharm_stage_order_and_checkpoint_choice() -> None:
    # README.md: rationale stage max_epoch=10 then label stage max_epoch=30 from its checkpoint,
    # both learning_rate=5e-5, batch_size=32; run.py ModelCheckpoint mode max (label) / min.
    first, second = mrharm.STAGES
    assert (first.name, first.epochs, first.lr, first.batch_size) == ("rationale", 10, 5e-5, 32)
    assert (second.name, second.epochs, second.init) == ("label", 30, "rationale")
    assert (first.monitor, first.mode, second.monitor, second.mode) == (
        "val_loss",
        "min",
        "val_accuracy",
        "max",
    )
    assert mrharm.best_epoch([0.9, 0.5, 0.7, 0.5], "min") == 1  # tie: the earlier epoch
    assert mrharm.best_epoch([0.60, 0.72, 0.72, 0.70], "max") == 1
    with pytest.raises(ValueError):
        mrharm.best_epoch([], "max")


def test_idealgpt_prompt_files_keep_the_reference_text() -> None:
    # chat/vcr_prompt.py / chat/ve_prompt.py, checked at the places where a copy most easily drifts:
    # trailing spaces, the "sub-question are" wording, the final newlines.
    from mmagents.prompts import load_prompt

    vcr = load_prompt("idealgpt_paper_vcr").variants
    ve = load_prompt("idealgpt_paper_snli_ve").variants
    assert vcr["init_asker"]["system"].endswith("Sub-question 4: What is the brand of this car? ")
    assert "5. The sub-question are necessary" in vcr["init_asker"]["system"]
    assert "5. The sub-questions are necessary" in ve["init_asker"]["system"]
    assert "solve the original main question.  \n\nThe current" in vcr["more_asker"]["system"]
    assert vcr["more_asker"]["system"].endswith("Additional Sub-question 4: xxxx ")
    assert vcr["reasoner"]["system"].endswith("More Likely Answer: 1/2/3/4.\n")
    assert "must give a prediction with educated guessing" in ve["final_reasoner"]["system"]
    assert vcr["reasoner"]["user"] == (
        "[placeholder]\nPlease follow the above-mentioned instruction to list the Analysis and "
        "More Likely Answer.\n"
    )
    # 22 lines with no final newline; 18 lines each ending in one (counted in the reference files)
    assert (
        ve["init_asker"]["system"].count("\n") == 21 and vcr["reasoner"]["system"].count("\n") == 18
    )
