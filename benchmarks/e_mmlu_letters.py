"""Workload (e): MMLU-style, options listed with letters, the answer a single letter.

Four phrasings x four MMLU subjects x 32 questions, each with its four options as A-D and the
continuation " A" ... " D" (one token each: lm-eval's hf backend runs each document once,
so the token ceiling is only what documents of a phrasing share: the instruction's text).
No chat template.
"""

from workload_helpers import listed_prompt, mmlu_rows, task_dict

DOCUMENTS = 32

PHRASINGS = [
    "The following is a multiple-choice question about {s}. Answer with the letter of the correct option.",
    "Question on {s}. Reply with A, B, C or D.",
    "You are an expert in {s}. Read the question and pick the best answer; give only its letter.",
    "Choose the correct answer ({s}).",
]

SUBJECTS = ["anatomy", "high_school_geography", "marketing", "college_physics"]

SETTINGS = {"apply_chat_template": False}

TASKS = []
for subject in SUBJECTS:
    rows = mmlu_rows(subject, DOCUMENTS)
    for p, text in enumerate(PHRASINGS):
        instruction = text.format(s=subject.replace("_", " "))
        prompted = [dict(row, prompt=listed_prompt(instruction, row, lettered=True), letters=list("ABCD")) for row in rows]
        TASKS.append(task_dict(f"e_{subject}_p{p}", prompted, delimiter=" ", choices="letters"))
