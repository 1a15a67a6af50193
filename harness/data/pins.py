"""Content pins: the sha256 of each task's normalised documents, per split.

A source file can be pinned by its own checksum only while it is the one file everybody
fetches; once a data set comes from several places (a clone, a tarball, a hub export, a
mirror), what must stay the same is what the harness scores. So every split's normalised
JSONL (exactly the bytes written to the cache, :func:`harness.data.cache.jsonl_bytes`) is
hashed, and a fetch from any source is compared with the pin in ``pins.json`` beside this
file before anything is written.

Tasks with no pin (``pins.json`` lists why: their data could not be fetched where the pins
were made) are stored with their hash recorded and marked unpinned; run.json shows it.

Regenerate after a deliberate converter change, with every source reachable:
``python -m harness.data.pins`` (reads the documents now in the cache; bump
``CONVERTER_VERSION`` in harness/data/catalog.py in the same change).
"""

from __future__ import annotations

import hashlib
import json
import os
from functools import cache
from pathlib import Path
from typing import Any

from harness.data.cache import DataMissing, jsonl_bytes

PINS_FILE = Path(__file__).with_name("pins.json")
#: Another pins file to use instead (tests whose fixture documents carry real task ids, or a
#: maintainer trying new pins); unset, the shipped one.
PINS_ENV = "IRH_PINS"


class ContentMismatch(DataMissing):
    """A source served documents whose content differs from the pinned content."""


def content_sha256(docs: list[dict[str, Any]]) -> str:
    """The sha256 of a split's documents as the cache stores them."""
    return hashlib.sha256(jsonl_bytes(docs)).hexdigest()


def pinned() -> dict[str, dict[str, str]]:
    """task id -> split -> pinned sha256 (empty where nothing is pinned)."""
    return _read_pins(os.environ.get(PINS_ENV) or str(PINS_FILE))


@cache
def _read_pins(path: str) -> dict[str, dict[str, str]]:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        if path != str(PINS_FILE):
            raise DataMissing(f"{PINS_ENV}={path}: no such file; unset it to use the shipped pins") from None
        return {}
    return {task: dict(splits) for task, splits in data.get("pins", {}).items()}


def pin_for(task_id: str, split: str) -> str | None:
    return pinned().get(task_id, {}).get(split)


def check_content(task_id: str, splits: dict[str, list[dict[str, Any]]], source: str) -> dict[str, str]:
    """Every split's content hash; raises ContentMismatch (one line) if one differs from its pin."""
    digests = {split: content_sha256(docs) for split, docs in splits.items()}
    for split, digest in digests.items():
        expected = pin_for(task_id, split)
        if expected is not None and digest != expected:
            raise ContentMismatch(
                f"{task_id} ({split}) from {source}: content sha256 {digest[:16]}… does not match the pinned {expected[:16]}…; "
                f"nothing was written. The copy differs from the one the harness pins: use an unmodified copy, or another source"
            )
    return digests


def _write_pins_from_cache() -> None:
    """Maintainers: pin every cached task whose documents came from a source (see module doc)."""
    from harness.data.cache import cache_root

    pins: dict[str, dict[str, str]] = {}
    for meta_path in sorted((cache_root() / "data").glob("*/meta.json")):
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
        digests = meta.get("content_sha256") or {}
        if digests:
            pins[meta["task"]] = dict(sorted(digests.items()))
    previous = json.loads(PINS_FILE.read_text(encoding="utf-8")) if PINS_FILE.exists() else {}
    out = {"schema_version": 1, "unpinned": previous.get("unpinned", {}), "pins": pins}
    for task in pins:
        out["unpinned"].pop(task, None)
    PINS_FILE.write_text(json.dumps(out, indent=1, sort_keys=False) + "\n", encoding="utf-8")
    print(f"pinned {len(pins)} tasks in {PINS_FILE}")


if __name__ == "__main__":
    _write_pins_from_cache()
