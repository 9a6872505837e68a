"""Fetching models over real HTTP from a loopback server: archives, mirrors, verification and failures."""

from __future__ import annotations

import functools
import hashlib
import os
import socket
import threading
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from revisit.models.fetch import fetch_models, source_url
from revisit.models.manifest import Manifest, ModelSpec, Source
from revisit.shared.errors import ModelError


class CountingServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.requests: list[str] = []


class Handler(SimpleHTTPRequestHandler):
    def do_GET(self) -> None:
        self.server.requests.append(self.path)
        super().do_GET()

    def log_message(self, *args: object) -> None:
        pass


@dataclass
class Served:
    root: Path
    url: str
    requests: list[str]


@pytest.fixture
def server(tmp_path) -> Iterator[Served]:
    root = tmp_path / "www"
    root.mkdir()
    httpd = CountingServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
    thread = threading.Thread(target=httpd.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    try:
        yield Served(root, f"http://127.0.0.1:{httpd.server_address[1]}", httpd.requests)
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(5)


@dataclass
class Fake:
    manifest: Manifest
    data: dict[str, bytes]  # model name -> the bytes that verify


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def spec_toml(
    name: str,
    file: str,
    data: bytes,
    role: str = "detector",
    url: str | None = None,
    member: str | None = None,
    extra: str = "",
) -> str:
    family = "arcface" if role == "recognizer" else "scrfd"
    text = (
        f'[models.{name}]\nname = "{name}"\nrole = "{role}"\nfamily = "{family}"\nfile = "{file}"\n'
        f'sha256 = "{sha(data)}"\nsize = {len(data)}\nlicence = "test"\n{extra}\n'
    )
    if role == "recognizer":
        text += "embedding_dim = 128\n"
    if url:
        text += f'[models.{name}.source]\nurl = "{url}"\n'
        if member:
            text += f'member = "{member}"\n'
    return text


@pytest.fixture
def fake(server, tmp_path) -> Fake:
    """A zip with two models (one under a top-level folder), a standalone file, and broken cases."""
    data = {
        name: os.urandom(size)
        for name, size in [
            ("det_a", 3000),
            ("rec_b", 5000),
            ("solo", 1500),
            ("bad", 700),
            ("nosrc", 900),
            ("gone", 100),
        ]
    }
    with zipfile.ZipFile(server.root / "pack.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("pack/det_a.onnx", data["det_a"])
        zf.writestr("rec_b.onnx", data["rec_b"])
        zf.writestr("pack/deeper/det_a.onnx", b"decoy")  # two folders deep: never matched
        zf.writestr("pack/README.txt", b"readme")
    (server.root / "solo.onnx").write_bytes(data["solo"])
    (server.root / "bad.onnx").write_bytes(b"not the file the manifest describes")
    (server.root / "mirror").mkdir()
    (server.root / "mirror" / "nosrc.onnx").write_bytes(data["nosrc"])
    text = "".join(
        [
            spec_toml("det_a", "det_a.onnx", data["det_a"], url=f"{server.url}/pack.zip", member="det_a.onnx"),
            spec_toml("rec_b", "rec_b.onnx", data["rec_b"], "recognizer", f"{server.url}/pack.zip", "rec_b.onnx"),
            spec_toml("solo", "solo.onnx", data["solo"], url=f"{server.url}/solo.onnx"),
            spec_toml("bad", "bad.onnx", data["bad"], url=f"{server.url}/bad.onnx"),
            spec_toml("nosrc", "nosrc.onnx", data["nosrc"], extra='upstream = "rebuilt locally, no download"'),
            spec_toml("gone", "gone.onnx", data["gone"], url=f"{server.url}/missing/gone.onnx"),
        ]
    )
    (tmp_path / "manifest.toml").write_text(text)
    return Fake(Manifest.load(tmp_path / "manifest.toml"), data)


def fetch(fake: Fake, names: list[str], target: Path, **kwargs):
    return fetch_models(fake.manifest, names, target, progress=False, timeout=5, **kwargs)


def test_fetch_extracts_verifies_and_writes(fake, server, tmp_path):
    target = tmp_path / "models" / "nested"  # created as needed
    results = fetch(fake, ["det_a", "rec_b", "solo"], target)
    assert [(r.name, r.action) for r in results] == [(n, "fetched") for n in ("det_a", "rec_b", "solo")]
    for name in ("det_a", "rec_b", "solo"):
        assert (target / f"{name}.onnx").read_bytes() == fake.data[name]
    # no temp files or archives left
    assert sorted(p.name for p in target.iterdir()) == ["det_a.onnx", "rec_b.onnx", "solo.onnx"]
    assert server.requests.count("/pack.zip") == 1  # one archive download for two members
    assert server.requests.count("/solo.onnx") == 1
    assert results[0].url == f"{server.url}/pack.zip (member det_a.onnx)"


def test_second_fetch_skips_and_force_downloads_again(fake, server, tmp_path):
    target = tmp_path / "models"
    fetch(fake, ["det_a", "rec_b", "solo"], target)
    server.requests.clear()
    results = fetch(fake, ["det_a", "rec_b", "solo"], target)
    assert {r.action for r in results} == {"skipped"}
    assert server.requests == []
    results = fetch(fake, ["det_a", "rec_b", "solo"], target, force=True)
    assert {r.action for r in results} == {"fetched"}
    assert sorted(server.requests) == ["/pack.zip", "/solo.onnx"]
    assert (target / "det_a.onnx").read_bytes() == fake.data["det_a"]


def test_no_names_fetches_what_is_missing_or_mismatching(fake, server, tmp_path):
    good = Manifest([fake.manifest.get(n) for n in ("det_a", "rec_b", "solo")])
    target = tmp_path / "models"
    target.mkdir()
    (target / "solo.onnx").write_bytes(b"corrupt")  # mismatching: replaced
    (target / "rec_b.onnx").write_bytes(fake.data["rec_b"])  # verified: kept
    reported = []
    results = fetch_models(good, [], target, progress=False, timeout=5, report=reported.append)
    assert {r.name: r.action for r in results} == {"det_a": "fetched", "rec_b": "skipped", "solo": "fetched"}
    assert reported == results
    assert (target / "solo.onnx").read_bytes() == fake.data["solo"]
    assert sorted(server.requests) == ["/pack.zip", "/solo.onnx"]


def test_wrong_hash_leaves_nothing_behind(fake, server, tmp_path):
    target = tmp_path / "models"
    served = (server.root / "bad.onnx").read_bytes()
    with pytest.raises(ModelError) as info:
        fetch(fake, ["bad"], target)
    message = str(info.value)
    assert "bad" in message and f"{server.url}/bad.onnx" in message
    assert sha(served) in message
    assert fake.manifest.get("bad").sha256 in message
    assert list(target.iterdir()) == []  # neither the file nor a temp file


def test_wrong_hash_of_a_zip_member_leaves_nothing_behind(fake, server, tmp_path):
    spec = fake.manifest.get("det_a").model_copy(update={"sha256": "0" * 64})
    target = tmp_path / "models"
    with pytest.raises(ModelError, match="0{64}") as info:
        fetch_models(Manifest([spec]), [], target, progress=False, timeout=5)
    assert sha(fake.data["det_a"]) in str(info.value)
    assert "pack.zip" in str(info.value)
    assert list(target.iterdir()) == []  # archive temp file removed too


def test_a_mismatching_file_is_not_replaced_by_a_bad_download(fake, server, tmp_path):
    target = tmp_path / "models"
    target.mkdir()
    (target / "bad.onnx").write_bytes(b"old")
    with pytest.raises(ModelError):
        fetch(fake, ["bad"], target)
    assert (target / "bad.onnx").read_bytes() == b"old"
    assert [p.name for p in target.iterdir()] == ["bad.onnx"]


def test_404_names_the_url(fake, server, tmp_path):
    target = tmp_path / "models"
    with pytest.raises(ModelError, match="model gone: .*404") as info:
        fetch(fake, ["gone"], target)
    assert f"{server.url}/missing/gone.onnx" in str(info.value)
    assert list(target.iterdir()) == []


def test_every_model_is_tried_and_failures_are_reported_together(fake, server, tmp_path):
    target = tmp_path / "models"
    reported = []
    with pytest.raises(ModelError) as info:
        fetch(fake, ["gone", "solo", "nosrc"], target, report=reported.append)
    message = str(info.value)
    assert message.startswith("2 models failed")
    assert "gone.onnx" in message and "nosrc" in message
    assert [r.name for r in reported] == ["solo"]
    assert (target / "solo.onnx").read_bytes() == fake.data["solo"]


def test_model_without_source_needs_a_mirror(fake, tmp_path):
    with pytest.raises(ModelError) as info:
        fetch(fake, ["nosrc"], tmp_path / "models")
    message = str(info.value)
    assert "nosrc" in message and "--mirror" in message and "rebuilt locally" in message


def test_packaged_w600k_mbf_has_no_upstream_download(tmp_path):
    with pytest.raises(ModelError) as info:
        fetch_models(Manifest.load(), ["w600k_mbf"], tmp_path, progress=False)
    message = str(info.value)
    assert "w600k_mbf" in message and "--mirror" in message and "rebuilt" in message
    assert list(tmp_path.iterdir()) == []


def test_mirror_over_http(fake, server, tmp_path):
    target = tmp_path / "models"
    results = fetch(fake, ["nosrc"], target, mirror=f"{server.url}/mirror/")
    assert results[0].action == "fetched" and results[0].url == f"{server.url}/mirror/nosrc.onnx"
    assert (target / "nosrc.onnx").read_bytes() == fake.data["nosrc"]
    assert server.requests == ["/mirror/nosrc.onnx"]


def test_mirror_replaces_the_upstream_source(fake, server, tmp_path):
    # With a mirror, even zip-sourced models are plain files under the mirror.
    (server.root / "mirror" / "det_a.onnx").write_bytes(fake.data["det_a"])
    fetch(fake, ["det_a"], tmp_path / "models", mirror=f"{server.url}/mirror")
    assert server.requests == ["/mirror/det_a.onnx"]
    assert (tmp_path / "models" / "det_a.onnx").read_bytes() == fake.data["det_a"]


def test_mirror_as_file_url_or_directory(fake, server, tmp_path):
    mirror = server.root / "mirror"
    fetch(fake, ["nosrc"], tmp_path / "a", mirror=mirror.as_uri())
    fetch(fake, ["nosrc"], tmp_path / "b", mirror=str(mirror))
    for sub in ("a", "b"):
        assert (tmp_path / sub / "nosrc.onnx").read_bytes() == fake.data["nosrc"]
    with pytest.raises(ModelError, match="cannot download file://"):
        fetch(fake, ["solo"], tmp_path / "c", mirror=mirror.as_uri())  # solo.onnx is not in the mirror
    assert list((tmp_path / "c").iterdir()) == []


def test_source_url():
    spec = ModelSpec(
        name="x",
        role="detector",
        family="scrfd",
        file="/abs/dir/x y.onnx",
        sha256="a" * 64,
        source=Source(url="https://example.org/x.zip", member="x.onnx"),
    )
    assert source_url(spec, None) == ("https://example.org/x.zip", "x.onnx")
    assert source_url(spec, "http://mirror.local/m/") == ("http://mirror.local/m/x%20y.onnx", None)


def test_unknown_name_is_refused_before_downloading(fake, server, tmp_path):
    with pytest.raises(ModelError, match="unknown model 'nope'.*det_a"):
        fetch(fake, ["solo", "nope"], tmp_path / "models")
    assert server.requests == []


@pytest.mark.parametrize("entry", ["../evil.onnx", "/evil.onnx"])
def test_unsafe_archive_members_are_refused(server, tmp_path, entry):
    data = b"evil payload"
    with zipfile.ZipFile(server.root / "evil.zip", "w") as zf:
        zf.writestr(entry, data)
    spec = ModelSpec(
        name="evil",
        role="detector",
        family="scrfd",
        file="evil.onnx",
        sha256=sha(data),
        source=Source(url=f"{server.url}/evil.zip", member="evil.onnx"),
    )
    target = tmp_path / "models"
    with pytest.raises(ModelError, match="unsafe"):
        fetch_models(Manifest([spec]), [], target, progress=False, timeout=5)
    assert list(target.iterdir()) == []
    assert not (tmp_path / "evil.onnx").exists()
    unsafe = Source(url=f"{server.url}/evil.zip", member="../evil.onnx")
    bad_member = spec.model_copy(update={"source": unsafe})
    with pytest.raises(ModelError, match="unsafe"):
        fetch_models(Manifest([bad_member]), [], target, progress=False, timeout=5)


def test_missing_member_and_bad_archive(fake, server, tmp_path):
    (server.root / "notzip.zip").write_bytes(b"this is not a zip archive")
    base = fake.manifest.get("det_a")
    missing = base.model_copy(update={"source": Source(url=f"{server.url}/pack.zip", member="nope.onnx")})
    with pytest.raises(ModelError, match="member nope.onnx not found"):
        fetch_models(Manifest([missing]), [], tmp_path / "m", progress=False, timeout=5)
    notzip = base.model_copy(update={"source": Source(url=f"{server.url}/notzip.zip", member="det_a.onnx")})
    with pytest.raises(ModelError, match="cannot read zip archive"):
        fetch_models(Manifest([notzip]), [], tmp_path / "m", progress=False, timeout=5)
    assert list((tmp_path / "m").iterdir()) == []


def test_a_server_that_never_answers_times_out(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(4)  # the kernel completes the connection; nobody ever replies
        url = f"http://127.0.0.1:{sock.getsockname()[1]}/slow.onnx"
        spec = ModelSpec(
            name="slow", role="detector", family="scrfd", file="slow.onnx", sha256="a" * 64, source=Source(url=url)
        )
        start = time.monotonic()
        with pytest.raises(ModelError, match="timed out") as info:
            fetch_models(Manifest([spec]), [], tmp_path / "m", progress=False, timeout=0.5)
        assert time.monotonic() - start < 5
    assert url in str(info.value)
    assert list((tmp_path / "m").iterdir()) == []


def test_connection_refused(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # bound, not listening: connections are refused
        spec = ModelSpec(
            name="x",
            role="detector",
            family="scrfd",
            file="x.onnx",
            sha256="a" * 64,
            source=Source(url=f"http://127.0.0.1:{port}/x.onnx"),
        )
        with pytest.raises(ModelError, match=f"cannot download http://127.0.0.1:{port}/x.onnx"):
            fetch_models(Manifest([spec]), [], tmp_path / "m", progress=False, timeout=2)


def test_unwritable_target_is_a_model_error(fake, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a directory")
    with pytest.raises(ModelError, match="cannot create model directory"):
        fetch(fake, ["solo"], blocker / "models")
