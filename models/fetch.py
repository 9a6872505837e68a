"""Downloading model files: from the manifest's upstream source or from a mirror, verified before use.

Every file is downloaded to a temporary file in the target directory, checked against the manifest's
sha256 (and size), and only then moved into place atomically. A file that does not verify is never
left behind. Archives shared by several models are downloaded once per run.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO, Literal

from tqdm import tqdm

from revisit.models.manifest import Manifest, ModelSpec
from revisit.models.store import model_path, status
from revisit.shared.errors import ModelError

DEFAULT_TIMEOUT = 60.0
_CHUNK = 1 << 16


@dataclass(frozen=True)
class FetchResult:
    name: str
    path: Path
    action: Literal["fetched", "skipped"]
    url: str | None = None


def fetch_models(
    manifest: Manifest,
    names: Iterable[str],
    directory: str | Path,
    mirror: str | None = None,
    force: bool = False,
    timeout: float = DEFAULT_TIMEOUT,
    progress: bool = True,
    report: Callable[[FetchResult], None] | None = None,
) -> list[FetchResult]:
    """Fetch `names` (every missing or mismatching model when empty) into `directory`.

    Tries every model, calling `report` after each; raises one ModelError naming all that failed.
    """
    directory = Path(directory)
    names = list(names)
    wanted = [manifest.get(n) for n in dict.fromkeys(names)] if names else list(manifest)
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ModelError(f"cannot create model directory {directory}: {exc}") from exc
    results: list[FetchResult] = []
    errors: list[str] = []
    with _ArchiveCache(directory, timeout, progress) as cache:
        for spec in wanted:
            try:
                if not force and status(spec, directory) == "verified":
                    result = FetchResult(spec.name, model_path(spec, directory), "skipped")
                else:
                    result = _fetch_one(spec, directory, mirror, timeout, progress, cache)
            except ModelError as exc:
                errors.append(str(exc))
                continue
            except OSError as exc:  # the target directory is not writable, the disk is full, ...
                errors.append(f"model {spec.name}: cannot write {model_path(spec, directory)}: {exc}")
                continue
            results.append(result)
            if report:
                report(result)
    if errors:
        prefix = f"{len(errors)} models failed: " if len(errors) > 1 else ""
        raise ModelError(prefix + "; ".join(errors))
    return results


def source_url(spec: ModelSpec, mirror: str | None) -> tuple[str, str | None]:
    """(url, zip member or None): `<mirror>/<file>` when a mirror is given, else the manifest's source."""
    if mirror:
        base = mirror if "://" in mirror else Path(mirror).expanduser().resolve().as_uri()
        return f"{base.rstrip('/')}/{urllib.parse.quote(Path(spec.file).name)}", None
    if spec.source is None:
        why = f" ({spec.upstream})" if spec.upstream else ""
        raise ModelError(
            f"model {spec.name} has no download source in the manifest{why}; "
            f"use --mirror URL to fetch {Path(spec.file).name} from your own mirror"
        )
    return spec.source.url, spec.source.member


def _fetch_one(
    spec: ModelSpec, directory: Path, mirror: str | None, timeout: float, progress: bool, cache: _ArchiveCache
) -> FetchResult:
    url, member = source_url(spec, mirror)
    target = model_path(spec, directory)
    target.parent.mkdir(parents=True, exist_ok=True)
    where = f"{url} (member {member})" if member else url
    # Read at most size + 1 bytes: a larger file cannot verify, and must not fill the disk.
    limit = spec.size + 1 if spec.size else None
    with _TempFile(target.parent, target.name) as tmp:
        try:
            if member is None:
                _download(url, tmp.fh, timeout, progress, spec.name, limit)
            else:
                _extract(cache.get(url), member, tmp.fh, url, limit)
        except ModelError as exc:
            raise ModelError(f"model {spec.name}: {exc}") from exc
        tmp.fh.flush()
        os.fsync(tmp.fh.fileno())
        actual, size = _sha256_size(tmp.path)
        if actual != spec.sha256 or (spec.size is not None and size != spec.size):
            raise ModelError(
                f"model {spec.name}: download from {where} has sha256 {actual} ({size} bytes), "
                f"expected {spec.sha256}" + (f" ({spec.size} bytes)" if spec.size else "") + "; nothing was written"
            )
        tmp.commit(target)
    return FetchResult(spec.name, target, "fetched", where)


def _download(url: str, out: BinaryIO, timeout: float, progress: bool, label: str, limit: int | None = None) -> None:
    """Stream `url` into `out`; network errors become ModelError with the url and the reason."""
    request = urllib.request.Request(url, headers={"User-Agent": "revisit-models-fetch"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            length = response.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            with tqdm(
                total=total,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                file=sys.stderr,
                disable=not progress,
                leave=False,
            ) as bar:
                done = 0
                while chunk := response.read(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    bar.update(len(chunk))
                    if limit is not None and done >= limit:
                        break  # already too large: the hash check reports it
    except urllib.error.HTTPError as exc:
        raise ModelError(f"cannot download {url}: HTTP {exc.code} {exc.reason}") from exc
    except urllib.error.URLError as exc:
        raise ModelError(f"cannot download {url}: {exc.reason}") from exc
    except TimeoutError as exc:
        raise ModelError(f"cannot download {url}: timed out after {timeout:g} s") from exc
    except (OSError, http.client.HTTPException) as exc:
        raise ModelError(f"cannot download {url}: {exc}") from exc


def _safe_name(name: str) -> bool:
    path = PurePosixPath(name.replace("\\", "/"))
    return bool(name) and not path.is_absolute() and ".." not in path.parts and ":" not in path.parts[0]


def _find_member(archive: zipfile.ZipFile, member: str) -> zipfile.ZipInfo:
    """The one entry named `member`, or `<top folder>/<member>`; unsafe names are refused."""
    infos = [i for i in archive.infolist() if not i.is_dir()]
    found = [i for i in infos if i.filename == member]
    if not found:
        found = [
            i for i in infos if len(PurePosixPath(i.filename).parts) == 2 and PurePosixPath(i.filename).name == member
        ]
    if len(found) != 1:
        what = "not found" if not found else f"ambiguous ({', '.join(i.filename for i in found)})"
        raise ModelError(f"member {member} {what} in archive")
    if not _safe_name(found[0].filename):
        raise ModelError(f"refusing unsafe archive member name {found[0].filename!r}")
    return found[0]


def _extract(archive_path: Path, member: str, out: BinaryIO, url: str, limit: int | None) -> None:
    if not _safe_name(member):
        raise ModelError(f"refusing unsafe archive member name {member!r} for {url}")
    try:
        with zipfile.ZipFile(archive_path) as archive:
            info = _find_member(archive, member)
            with archive.open(info) as src:
                done = 0
                while chunk := src.read(_CHUNK):
                    out.write(chunk)
                    done += len(chunk)
                    if limit is not None and done >= limit:
                        break
    except ModelError as exc:
        raise ModelError(f"{url}: {exc}") from exc
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise ModelError(f"cannot read zip archive from {url}: {exc}") from exc


def _sha256_size(path: Path) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


class _TempFile:
    """A temporary file beside the target; removed on exit unless committed with an atomic rename."""

    def __init__(self, directory: Path, stem: str):
        fd, name = tempfile.mkstemp(dir=directory, prefix=f".{stem}.", suffix=".part")
        self.path = Path(name)
        self.fh: BinaryIO = os.fdopen(fd, "wb")

    def __enter__(self) -> _TempFile:
        return self

    def commit(self, target: Path) -> None:
        self.fh.close()
        os.chmod(self.path, 0o666 & ~_umask())  # mkstemp makes 0600; a model file is as readable as any other
        os.replace(self.path, target)
        _fsync_dir(target.parent)

    def __exit__(self, *exc: object) -> None:
        self.fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _fsync_dir(directory: Path) -> None:
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class _ArchiveCache:
    """Archives downloaded in this run, by url, kept as temporary files in the target directory."""

    def __init__(self, directory: Path, timeout: float, progress: bool):
        self.directory, self.timeout, self.progress = directory, timeout, progress
        self._files: dict[str, _TempFile] = {}
        self._failed: dict[str, ModelError] = {}

    def get(self, url: str) -> Path:
        if url in self._failed:  # one failed download is not retried for the next member
            raise self._failed[url]
        if url not in self._files:
            tmp = _TempFile(self.directory, "archive")
            try:
                label = PurePosixPath(urllib.parse.urlparse(url).path).name or url
                _download(url, tmp.fh, self.timeout, self.progress, label)
                tmp.fh.close()
            except ModelError as exc:
                tmp.__exit__()
                self._failed[url] = exc
                raise
            except BaseException:
                tmp.__exit__()
                raise
            self._files[url] = tmp
        return self._files[url].path

    def __enter__(self) -> _ArchiveCache:
        return self

    def __exit__(self, *exc: object) -> None:
        for tmp in self._files.values():
            tmp.__exit__()
        self._files.clear()
