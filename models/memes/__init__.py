"""Trained meme students at inference: one folder in, label + probability (+ rationale) out.

``mmagents finetune meme`` trains a student into a folder (``student.json`` beside the weights);
:func:`load_student` turns the folder back into a :class:`MemeStudent`, whatever its variant:

* ``encoder`` (:mod:`.encoder`): MiniLM over (text, caption) with a label head;
* ``generative`` (:mod:`.generative`): a small causal LM with LoRA, labels by likelihood and its
  own rationale by greedy decoding;
* ``t5-clip`` (:mod:`.t5clip`): the paper's Flan-T5 reading frozen CLIP patch features, labels by
  likelihood or by its generated answer (:mod:`._mrharm_paper`, the published recipe).

Inference only, below the graphs: training lives in :mod:`mmagents.finetune` and imports the
networks from here. Importing this package imports no torch.
"""

from __future__ import annotations

from mmagents.models.memes.student import (
    KIND,
    VARIANTS,
    MemeStudent,
    StudentPrediction,
    load_student,
    read_student_meta,
    write_student_meta,
)

__all__ = [
    "KIND",
    "VARIANTS",
    "MemeStudent",
    "StudentPrediction",
    "load_student",
    "read_student_meta",
    "write_student_meta",
]
