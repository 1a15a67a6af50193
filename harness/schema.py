"""Pydantic models of what lives on disk: task specs and phrasing (instruction) files.

Every model forbids unknown fields so that a typo in a YAML file is an error, not a
silently ignored key.
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

SCHEMA_VERSION = 1

#: Instruction-tuning collections a phrasing can be observed in. Closed on purpose: a new
#: collection is added here (and to ``harness/model_families.yaml``) in the same change.
COLLECTIONS: dict[str, str] = {
    "flan-2021": "FLAN 2021 templates (Wei et al. 2021)",
    "flan-2022": "The Flan Collection 2022 (Longpre et al. 2023), incl. Flan 2021, T0-SF, Muffin",
    "super-natural-instructions": "Super-NaturalInstructions (Wang et al. 2022)",
    "p3-promptsource": "P3 / promptsource templates (Sanh et al. 2022; Bach et al. 2022)",
    "alpaca": "Stanford Alpaca 52k (Taori et al. 2023)",
    "self-instruct": "Self-Instruct (Wang et al. 2023)",
    "dolly-15k": "databricks-dolly-15k",
    "openassistant": "OpenAssistant Conversations (Kopf et al. 2023)",
    "unnatural-instructions": "Unnatural Instructions (Honovich et al. 2023)",
    "tulu-v2": "Tulu v2 SFT mixture (Ivison et al. 2023)",
    "smoltalk": "SmolTalk (Allal et al. 2025), SmolLM2's instruction data",
}

Collection = Literal[
    "flan-2021",
    "flan-2022",
    "super-natural-instructions",
    "p3-promptsource",
    "alpaca",
    "self-instruct",
    "dolly-15k",
    "openassistant",
    "unnatural-instructions",
    "tulu-v2",
    "smoltalk",
]

OutputType = Literal["multiple_choice", "generate_until"]
Metric = Literal["acc", "multiple_choice_grade", "exact_str_match", "bleu", "rougeLsum"]
AnswerStyle = Literal["text", "letters", "numbers"]

ID_PATTERN = r"^[a-z0-9][a-z0-9_.\-]*$"
LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Provenance(_Strict):
    """Where a phrasing comes from.

    ``unobserved``: not in any instruction-tuning collection we know of (every phrasing
    written for this registry, and imported evaluation prompts such as PromptBench's).
    ``observed``: taken from one or more instruction-tuning collections; models tuned on
    those collections have seen it.
    """

    status: Literal["unobserved", "observed"]
    author: str | None = None
    collections: list[Collection] = Field(default_factory=list)
    source: str | None = None

    @model_validator(mode="after")
    def _check_consistency(self) -> Provenance:
        if self.status == "observed" and not self.collections:
            raise ValueError("an observed phrasing must name its collections")
        if self.status == "observed" and not self.source:
            raise ValueError("an observed phrasing must give a source reference")
        if self.status == "unobserved" and self.collections:
            raise ValueError("an unobserved phrasing cannot list collections")
        if self.status == "unobserved" and not (self.author or self.source):
            raise ValueError("an unobserved phrasing needs an author (or a source if imported)")
        return self


class Instruction(_Strict):
    """One phrasing of a task's instruction: a jinja2 template over the task's fields."""

    id: Annotated[str, Field(pattern=ID_PATTERN)]
    text: Annotated[str, Field(min_length=1)]
    #: How the answer options are written as continuations: the option texts themselves,
    #: letters (A, B, ...), numbers (1, 2, ...), or a verbaliser mapping each of the task's
    #: labels to the word the model should produce.
    answer_choices: AnswerStyle | dict[str, str] = "text"
    #: Put between the prompt and each scored continuation (lm-eval's target_delimiter).
    target_delimiter: str = " "
    #: For generation tasks: stop sequences and length, overriding the task's defaults.
    until: list[str] | None = None
    provenance: Provenance
    notes: str | None = None

    @field_validator("answer_choices")
    @classmethod
    def _nonempty_verbaliser(cls, value: AnswerStyle | dict[str, str]) -> AnswerStyle | dict[str, str]:
        if isinstance(value, dict):
            if not value:
                raise ValueError("a verbaliser mapping cannot be empty")
            if any(not v.strip() for v in value.values()):
                raise ValueError("verbaliser words cannot be empty")
            if len(set(value.values())) != len(value):
                raise ValueError("verbaliser words must differ from each other")
        return value


class InstructionFile(_Strict):
    """A YAML file of phrasings for one task, one task family, or one category."""

    schema_version: Literal[1]
    task: str | None = None
    family: str | None = None
    category: str | None = None
    instructions: list[Instruction]

    @model_validator(mode="after")
    def _one_target(self) -> InstructionFile:
        given = [k for k in ("task", "family", "category") if getattr(self, k)]
        if len(given) != 1:
            raise ValueError("give exactly one of `task`, `family` or `category`")
        return self

    @property
    def target(self) -> tuple[str, str]:
        """(kind, name) of what the phrasings apply to."""
        for kind in ("task", "family", "category"):
            value = getattr(self, kind)
            if value:
                return kind, value
        raise AssertionError("unreachable: validated above")


class TaskSpec(_Strict):
    """A task: which data, which fields a phrasing may use, how answers are scored."""

    id: Annotated[str, Field(pattern=ID_PATTERN)]
    family: str
    category: str
    description: str = ""
    #: Name of the dataset in the data catalogue (``irh data list``); defaults to the id.
    data: str | None = None
    split: str = "test"
    output_type: OutputType = "multiple_choice"
    #: Document fields a phrasing may use as placeholders.
    fields: list[str]
    #: For tasks whose options are the same fixed labels for every document.
    labels: list[str] | None = None
    metric: Metric = "acc"
    #: Generation defaults.
    until: list[str] = Field(default_factory=lambda: ["\n"])
    max_gen_toks: int = 64

    @property
    def data_name(self) -> str:
        return self.data or self.id

    @model_validator(mode="after")
    def _check(self) -> TaskSpec:
        if self.output_type == "multiple_choice" and "choices" not in self.fields and not self.labels:
            raise ValueError("a multiple_choice task needs a `choices` field or fixed `labels`")
        if self.output_type == "generate_until" and self.metric in ("acc", "multiple_choice_grade"):
            raise ValueError(f"metric {self.metric} is for multiple_choice tasks")
        return self


class TaskFile(_Strict):
    schema_version: Literal[1]
    tasks: list[TaskSpec]


_WS = re.compile(r"\s+")


def normalise_text(text: str) -> str:
    """Lower-case, collapse white space: the form used for duplicate detection."""
    return _WS.sub(" ", text.strip().lower())
