"""GGUF files as transformers folders: converted once, kept in the data cache under the
file's sha256 (irh run's default model, and irh-fast given ``gguf_file=``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from harness.data.cache import cache_root, sha256_file


def converted_gguf_dir(gguf: Path, progress: Any = None, name: str | None = None) -> Path:
    """A transformers folder converted once from a GGUF file, kept in the cache.

    Loading a GGUF dequantises every tensor (~20-45 s on 2 cores for the default model); the
    converted fp32 safetensors copy loads in well under a second and gives the same
    loglikelihoods. The folder name ends in the GGUF's sha256, so a different file never
    reuses a stale copy, and any copy of the same file (made by `irh run` or by irh-fast
    under `irh-lm-eval`) is reused whatever its name.
    """
    import shutil
    import tempfile

    digest = sha256_file(gguf)
    models = cache_root() / "models"
    for existing in sorted(models.glob(f"*-{digest[:12]}")) if models.is_dir() else []:
        if (existing / "config.json").exists():
            return existing
    target = models / f"{name or gguf.stem}-{digest[:12]}"
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
