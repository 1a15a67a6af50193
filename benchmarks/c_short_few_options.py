"""Workload (c): short contexts, 2-3 options, in the model's chat template.

Four phrasings x two BIG-bench tasks with short questions: known_unknowns (2 options, one of
them "Unknown") and bbq_lite_json (3 short options), the question alone in the user turn and
each option scored as the assistant's reply (options not listed in the prompt).
"""

from workload_helpers import bigbench_rows, task_dict

DOCUMENTS = 40

PHRASINGS = [
    "Answer the question.\n\n{q}",
    "{q}\nGive a short answer.",
    "Here is a question for you: {q}",
    "Q: {q}\nReply in a few words.",
]

SOURCES = [("bbl.known_unknowns", None), ("bbl.bbq_lite_json", None)]

SETTINGS = {"apply_chat_template": True}

TASKS = [
    task_dict(
        f"c_{task.split('.')[1]}_p{p}",
        [dict(row, prompt=text.format(q=row["question"])) for row in bigbench_rows(task, group, DOCUMENTS)],
        delimiter=" ",
    )
    for task, group in SOURCES
    for p, text in enumerate(PHRASINGS)
]
