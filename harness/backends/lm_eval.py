"""Score rendered phrasings through lm-evaluation-harness's Python API.

Each (task, phrasing, chunk of documents) becomes one inline lm-eval task config over the
already-rendered prompts (``doc_to_text: prompt``, an in-memory dataset), loaded by lm-eval's
TaskManager and run by ``lm_eval.evaluator.evaluate`` on a model object that is loaded once
per run. (``simple_evaluate`` does the same plus a ~1 s environment survey per call, which
we record once in run.json instead.) lm-eval never sees our templates, so its own
(unsandboxed) template engine is never applied to untrusted text.
"""

from __future__ import annotations

import logging
import re
from typing import Any, NamedTuple

from harness.answers import parse_choice, score_parsed
from harness.metrics import score_choice, score_generation
from harness.render import RenderedPrompt
from harness.schema import Instruction, TaskSpec

#: Tokens a chat endpoint may spend answering a multiple-choice question ("The answer is B.").
MC_ANSWER_TOKENS = 32
#: Where such an answer ends, unless the phrasing says (a blank line; some servers, such as
#: `transformers serve`, refuse an empty stop list).
MC_ANSWER_STOP = ("\n\n",)


class ScoredDoc(NamedTuple):
    """lm-eval's answer for one document: the context it built, and the scored outcome."""

    doc_id: str
    context: str
    options: list[str]
    loglikelihoods: list[float] | None
    prediction: int | None
    generation: str | None
    score: float
    correct: bool


_TASK_MANAGER: Any = None


def _task_manager() -> Any:
    """A TaskManager that skips indexing lm-eval's ~14k built-in tasks (we pass dicts)."""
    global _TASK_MANAGER
    if _TASK_MANAGER is None:
        from lm_eval.tasks import TaskManager

        _TASK_MANAGER = TaskManager(include_defaults=False)
    return _TASK_MANAGER


#: What lm-eval logs about every inline task it loads (harness's own ``irh_*`` configs, which
#: leave aggregation to its default on purpose and read a dataset from memory): once per
#: chunk, never news. Anything else it logs, errors included, still reaches the user.
_CHUNK_CHATTER = re.compile(
    r"^(\[Task: irh_\w+\] metric \w+ is defined, but (aggregation|higher_is_better) is not\."
    r"|irh_\w+: Custom kwargs can be passed to `--metadata`)"
)


class _ChunkChatter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return not (record.levelno <= logging.WARNING and _CHUNK_CHATTER.match(record.getMessage()))


_CHATTER_FILTER = _ChunkChatter()


def quiet_chunk_chatter() -> None:
    """Drop lm-eval's per-task notes about our inline configs (see :data:`_CHUNK_CHATTER`)."""
    logger = logging.getLogger("lm_eval.api.task")
    if _CHATTER_FILTER not in logger.filters:
        logger.addFilter(_CHATTER_FILTER)


class ServerUnavailable(RuntimeError):
    """The model server stopped answering (refused connections, timeouts after lm-eval's retries)."""


class ServerProblem(RuntimeError):
    """The model server answered, but not with what the run needs (e.g. no prompt logprobs)."""


def is_chat_endpoint(lm: Any) -> bool:
    """Whether the model is a chat-completions endpoint: the server applies its own chat template
    and returns no prompt logprobs (``local-chat-completions``, ``openai-chat-completions``)."""
    from lm_eval.models.openai_completions import LocalChatCompletion

    return isinstance(lm, LocalChatCompletion)


def is_server_model(lm: Any) -> bool:
    """Whether the model is one of lm-eval's API models (an HTTP endpoint)."""
    from lm_eval.models.api_models import TemplateAPI

    return isinstance(lm, TemplateAPI)


def _unreachable(exc: BaseException) -> bool:
    """Whether an exception (or one it was raised from) says the server could not be reached:
    a refused or dropped connection or a timeout, from the HTTP clients lm-eval uses (requests,
    aiohttp; recognised by class, so that neither need be imported here)."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, (ConnectionError, TimeoutError)):
            return True
        for cls in type(current).__mro__:
            package = cls.__module__.partition(".")[0]
            if package in ("requests", "aiohttp", "urllib3") and ("Connect" in cls.__name__ or "Timeout" in cls.__name__):
                return True
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return False


def has_chat_template(lm: Any) -> bool:
    """Whether the lm-eval model object carries a chat template (a chat endpoint applies its own)."""
    if is_chat_endpoint(lm):
        return True
    try:
        return bool(lm.chat_template(True))
    except Exception:
        return False


class _Rows:
    """lm-eval's ``custom_dataset`` hook: builds the test split from rows held in memory."""

    def __init__(self, rows: list[dict[str, Any]]):
        self.rows = rows

    def __call__(self, **_: Any) -> Any:
        import datasets

        return datasets.DatasetDict({"test": datasets.Dataset.from_list(self.rows)})


def task_config(
    name: str,
    rows: list[dict[str, Any]],
    task: TaskSpec,
    instruction: Instruction,
    placement: str,
    generated: bool = False,
) -> dict[str, Any]:
    """The inline lm-eval task config for one chunk of rendered documents.

    ``generated``: a multiple-choice task scored by generation (on a chat-only endpoint): the
    model answers in words, and :func:`harness.answers.parse_choice` reads the option it names.
    """
    config: dict[str, Any] = {
        "task": name,
        "custom_dataset": _Rows(rows),
        "test_split": "test",
        "doc_to_text": "prompt",
        "target_delimiter": instruction.target_delimiter,
        "num_fewshot": 0,
        "metadata": {"version": 1},
    }
    if placement == "system":
        config["description"] = "system"
    if generated:
        config.update(
            output_type="generate_until",
            doc_to_target="target",
            metric_list=[{"metric": "bypass"}],
            generation_kwargs={
                "until": list(instruction.until or MC_ANSWER_STOP),
                "max_gen_toks": MC_ANSWER_TOKENS,
                "do_sample": False,
                "temperature": 0.0,
            },
        )
    elif task.output_type == "multiple_choice":
        config.update(
            output_type="multiple_choice",
            doc_to_choice="options",
            doc_to_target="gold",
            metric_list=[{"metric": "acc"}],
        )
    else:
        config.update(
            output_type="generate_until",
            doc_to_target="target",
            metric_list=[{"metric": "bypass"}],
            generation_kwargs={
                "until": list(instruction.until if instruction.until is not None else task.until),
                "max_gen_toks": task.max_gen_toks,
                "do_sample": False,
                "temperature": 0.0,
            },
        )
    return config


def _work_rows(
    task: TaskSpec, docs: list[dict[str, Any]], prompts: list[RenderedPrompt], option_scores: list[list[float]]
) -> list[dict[str, Any]]:
    rows = []
    for doc, prompt, scores in zip(docs, prompts, option_scores, strict=True):
        row: dict[str, Any] = {"doc_id": doc["id"], "prompt": prompt.user, "system": prompt.system}
        if task.output_type == "multiple_choice":
            row["options"] = prompt.options
            row["gold"] = max(range(len(scores)), key=lambda i: scores[i])
            row["target"] = prompt.options[row["gold"]]
        else:
            row["target"] = doc["targets"][0]
        rows.append(row)
    return rows


def _context_text(context: Any) -> str:
    """The context lm-eval scored, as text. A chat endpoint's is the JSON of its messages,
    which lm-eval wraps in a one-field tuple (``JsonChatStr``) and logs as that tuple's repr."""
    if isinstance(context, tuple):
        return str(context[0])
    text = str(context)
    if text.startswith("('") or text.startswith('("'):
        import ast

        try:
            parsed = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text
        if isinstance(parsed, tuple) and len(parsed) == 1 and isinstance(parsed[0], str):
            return parsed[0]
    return text


def evaluate_chunk(
    lm: Any,
    *,
    name: str,
    task: TaskSpec,
    instruction: Instruction,
    docs: list[dict[str, Any]],
    prompts: list[RenderedPrompt],
    option_scores: list[list[float]],
    placement: str,
    chat: bool,
    seed: int,
) -> list[ScoredDoc]:
    """Evaluate one chunk of documents under one phrasing; returns one result per document."""
    from lm_eval.evaluator import evaluate

    quiet_chunk_chatter()
    rows = _work_rows(task, docs, prompts, option_scores)
    generated = task.output_type == "multiple_choice" and is_chat_endpoint(lm)
    loaded = _task_manager().load([task_config(name, rows, task, instruction, placement, generated)])
    for task_obj in loaded["tasks"].values():
        task_obj.set_fewshot_seed(seed=seed)
    try:
        results = evaluate(
            lm=lm,
            task_dict=loaded,
            log_samples=True,
            apply_chat_template=chat,
            bootstrap_iters=0,
            verbosity="ERROR",
        )
    except Exception as exc:
        if not is_server_model(lm):
            raise
        url = getattr(lm, "base_url", "?")
        if _unreachable(exc):
            raise ServerUnavailable(f"the model server at {url} stopped answering ({type(exc).__name__}: {exc})") from exc
        if task.output_type == "multiple_choice" and isinstance(exc, (TypeError, KeyError)):
            raise ServerProblem(
                f"the server at {url} returned no prompt logprobs (it ignores `echo`/`logprobs`, as `transformers serve` does), "
                f"so multiple-choice tasks cannot be scored by loglikelihood there; use --model local-chat-completions:... "
                f"(scored by generation) or a server that returns them (vLLM, llama.cpp)"
            ) from exc
        raise
    if results is None:
        raise RuntimeError("lm-eval returned no results (non-zero rank?)")
    samples = sorted(results["samples"][name], key=lambda s: int(s["doc_id"]))
    out: list[ScoredDoc] = []
    for sample, doc, scores in zip(samples, docs, option_scores, strict=True):
        logged = sample["doc"]
        if logged["doc_id"] != doc["id"]:
            raise RuntimeError(f"lm-eval returned documents out of order ({logged['doc_id']} != {doc['id']})")
        context = _context_text(sample["arguments"][0][0])
        if generated:
            text = str(sample["resps"][0][0])
            choice = parse_choice(text, prompt_options := list(logged["options"]))
            score = score_parsed(choice, scores)
            out.append(ScoredDoc(doc["id"], str(context), prompt_options, None, choice, text, score.score, score.correct))
        elif task.output_type == "multiple_choice":
            lls = [float(resp[0][0]) for resp in sample["resps"]]
            best, score = score_choice(lls, scores)
            continuations = [arg[1] for arg in sample["arguments"]]
            out.append(ScoredDoc(doc["id"], context, continuations, lls, best, None, score.score, score.correct))
        else:
            text = str(sample["resps"][0][0])
            score = score_generation(text, doc["targets"], task.metric, task.output_regex, task.stop_string)
            out.append(ScoredDoc(doc["id"], context, [], None, None, text, score.score, score.correct))
    return out


def lm_eval_cli(argv: list[str] | None = None) -> None:
    """The ``irh-lm-eval`` command: lm-eval's own CLI, unchanged, with ``irh-fast`` registered.

    lm-eval 0.4.x finds models only in its own registry (no entry-point discovery), and its
    CLI never imports this package, so ``lm_eval --model irh-fast`` cannot find our scorer;
    this registers it first and then hands every argument to lm-eval.
    """
    import sys

    import lm_eval.models  # noqa: F401  (lm-eval's own model names first)
    from lm_eval.__main__ import cli_evaluate

    import harness.backends.fast  # noqa: F401  (registers irh-fast)

    if argv is not None:
        sys.argv = ["lm-eval", *argv]
    cli_evaluate()
