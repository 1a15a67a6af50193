"""Workload (d): options listed in the prompt, no chat template.

Five phrasings x two BIG-bench subtasks x 16 documents, 3-4 multi-token options, short
contexts, each answer option listed in the prompt and scored as the continuation after
"Answer:". One inline lm-eval task config per (subtask, phrasing), as a user builds them for
``simple_evaluate``. Documents come from the irh cache (`irh data fetch bbl`).
"""

from workload_helpers import bigbench_rows, listed_prompt, task_dict

#: Documents per subtask (sized for the five workloads' ~25-minute script; the issue used 20).
DOCUMENTS = 16

PHRASINGS = [
    "Pick the option that answers the question best.",
    "Below is a question followed by possible answers. Reply with the correct answer, word for word.",
    "Choose one answer from the list.",
    "You are taking a quiz. Read the item and give the right option.",
    "Which of the listed answers is correct? Copy it out exactly.",
]

SUBTASKS = [
    ("bbl.conceptual_combinations", "emergent_properties"),  # 4 options
    ("bbl.logical_deduction", "three_objects"),  # 3 options
]

SETTINGS = {"apply_chat_template": False}

TASKS = [
    task_dict(
        f"d_{group}_p{p}",
        [dict(row, prompt=listed_prompt(text, row)) for row in bigbench_rows(task, group, DOCUMENTS)],
        delimiter=" ",
    )
    for task, group in SUBTASKS
    for p, text in enumerate(PHRASINGS)
]
