"""Real bundles (`revisit deploy bundle --target ...`, wheelhouse downloaded here) installed offline by
install-edge.sh, then `revisit edge check-config` and `revisit faces` on a photo in the installed software:

- linux-aarch64 in an arm64 Debian 12 root under qemu-user (binfmt_misc): real aarch64 wheels of numpy,
  onnxruntime and OpenCV run the models. The root (mmdebstrap, ~2 min) is cached in $REVISIT_TEST_CACHE
  (default ~/.cache/revisit-test); each test works on a copy. Needs root, qemu-user-static, binfmt-support,
  mmdebstrap and the network (Debian mirror for a first root, the package registry for the wheels).
- linux-x86_64 on this machine (x86-64) under --prefix, for every Python 3.10-3.13 found here (pyenv or PATH).

Slow (minutes): building a bundle downloads ~150 MB the first time (pip's cache keeps them), pip runs emulated.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import socket
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from revisit.cli import main
from revisit.deploy import build_bundle

pytestmark = pytest.mark.slow

CACHE = Path(os.environ.get("REVISIT_TEST_CACHE") or Path.home() / ".cache" / "revisit-test")
SUITE = "bookworm"  # Debian 12: Python 3.11
PACKAGES = "python3,python3-venv,passwd"  # passwd: useradd, for the installer's system user
BINFMT = Path("/proc/sys/fs/binfmt_misc")
SCRIPT = Path(__file__).resolve().parents[2] / "deploy" / "install-edge.sh"
CHROOT_ENV = ["/usr/bin/env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]
CHROOT_ENV += ["HOME=/root", "LANG=C.UTF-8"]


def _online(host: str, port: int) -> bool:
    try:
        socket.create_connection((host, port), timeout=5).close()
        return True
    except OSError:
        return False


def _can_build_offline() -> bool:
    try:
        import setuptools
        import wheel  # noqa: F401
    except ImportError:
        return False
    return int(setuptools.__version__.split(".")[0]) >= 68


def _bundle(out: Path, models_dir: Path, target: str, python: str | None = None) -> Path:
    if not _online("pypi.org", 443):
        pytest.skip("no network: building a bundle downloads the target's wheels from pypi.org")
    started = time.monotonic()
    build_bundle(out, models_dir, target=target, python_version=python, build_isolation=not _can_build_offline())
    print(
        f"\n{target} bundle (Python {python or 'default'}): {out.stat().st_size / 1e6:.1f} MB, "
        f"built in {time.monotonic() - started:.0f} s"
    )
    return out


def _host_faces(models_dir: Path, photo: Path, capsys) -> dict:
    capsys.readouterr()
    assert main(["faces", "--json", "--models", str(models_dir), str(photo)]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def _same_faces(theirs: dict, ours: dict) -> None:
    """The same faces as this machine's run (other CPU, other wheels: boxes agree to a pixel or two)."""
    assert theirs["recognizer_id"] == ours["recognizer_id"]
    assert len(theirs["faces"]) == len(ours["faces"]) >= 1
    for a, b in zip(theirs["faces"], ours["faces"], strict=True):
        assert max(abs(x - y) for x, y in zip(a["box"], b["box"], strict=True)) <= 2.0, (a, b)
        assert abs(a["quality"]["score"] - b["quality"]["score"]) <= 0.02


@pytest.fixture(scope="module")
def photo(facedata) -> Path:
    return sorted((facedata / "photos").glob("*/*_0001.jpg"))[0]


# -- arm64, emulated ---------------------------------------------------------------------------------------------


def _arm64_ready() -> None:
    """Skip (with the reason) unless aarch64 binaries can run here; enable qemu's binfmt handler if need be."""
    if os.geteuid() != 0:
        pytest.skip("the arm64 install test needs root (binfmt_misc, mmdebstrap, chroot)")
    for tool in ("qemu-aarch64-static", "mmdebstrap", "update-binfmts", "chroot"):
        if not shutil.which(tool):
            pytest.skip(f"{tool} not found: apt-get install qemu-user-static binfmt-support mmdebstrap")
    if not (BINFMT / "status").exists():
        mounted = subprocess.run(["mount", "-t", "binfmt_misc", "binfmt_misc", str(BINFMT)], capture_output=True)
        if mounted.returncode != 0:
            pytest.skip(f"cannot mount binfmt_misc: {mounted.stderr.decode().strip()}")
    handler = BINFMT / "qemu-aarch64"
    if not handler.exists() or "enabled" not in handler.read_text():
        subprocess.run(["update-binfmts", "--enable", "qemu-aarch64"], capture_output=True)
    if not handler.exists() or "enabled" not in handler.read_text():
        pytest.skip("qemu-aarch64's binfmt handler cannot be enabled (update-binfmts --enable qemu-aarch64)")


def _arm64_root() -> Path:
    """A cached arm64 Debian root (mmdebstrap, once)."""
    key = hashlib.sha256(f"{SUITE} {PACKAGES}".encode()).hexdigest()[:8]
    root = CACHE / f"{SUITE}-arm64-{key}"
    if (root / "usr/bin/python3").exists():
        return root
    if not _online("deb.debian.org", 80):
        pytest.skip(f"no network: the arm64 root is not cached in {CACHE} and deb.debian.org is unreachable")
    tmp = CACHE / f".{root.name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    CACHE.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    subprocess.run(
        ["mmdebstrap", "--quiet", "--arch=arm64", "--variant=apt", f"--include={PACKAGES}", SUITE, str(tmp)],
        check=True,
        timeout=1800,
    )
    tmp.rename(root)
    print(f"\narm64 root made in {time.monotonic() - started:.0f} s: {root}")
    return root


def _chroot(root: Path, *cmd: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    return subprocess.run(["chroot", str(root), *CHROOT_ENV, *cmd], capture_output=True, text=True, timeout=timeout)


def test_arm64_bundle_installs_offline_and_runs_the_models(tmp_path, models_dir, photo, capsys):
    _arm64_ready()
    cached = _arm64_root()
    bundle = _bundle(tmp_path / "revisit-linux-aarch64.tar.gz", models_dir, "linux-aarch64")
    root = tmp_path / "root"
    subprocess.run(["cp", "-a", "--reflink=auto", str(cached), str(root)], check=True)
    assert _chroot(root, "uname", "-m").stdout.strip() == "aarch64"  # the root's binaries run under qemu
    shutil.copy(bundle, root / "root" / bundle.name)
    shutil.copy(photo, root / "root" / "face.jpg")
    subprocess.run(["mount", "-t", "proc", "proc", str(root / "proc")], check=True)  # onnxruntime reads cpuinfo
    try:
        started = time.monotonic()
        installed = _chroot(
            root,
            "bash",
            "-c",
            f"cd /root && tar xzf {bundle.name} && bash revisit-bundle/install-edge.sh --bundle {bundle.name} "
            "--site s1 --device arm-box --broker mqtt.example.com:8883 --camera door=rtsp://10.0.0.5/s1 "
            "--no-doctor",
        )
        install_s = time.monotonic() - started
        assert installed.returncode == 0, installed.stdout[-4000:] + installed.stderr[-4000:]
        assert "bundle for linux-aarch64 (aarch64, Python 3.11); this box: aarch64" in installed.stdout
        assert "creating system user revisit" in installed.stdout

        machine = _chroot(
            root,
            "/opt/revisit/.venv/bin/python",
            "-c",
            "import platform, onnxruntime, cv2; print(platform.machine(), onnxruntime.__version__, cv2.__version__)",
        )
        assert machine.returncode == 0 and machine.stdout.startswith("aarch64 "), machine.stderr

        checked = _chroot(root, "revisit", "edge", "check-config", "--config", "/etc/revisit/edge.toml")
        assert checked.returncode == 0, checked.stderr
        assert json.loads(checked.stdout)["device"] == "arm-box"

        started = time.monotonic()
        faces = _chroot(root, "revisit", "faces", "--json", "--models", "/opt/revisit/models", "/root/face.jpg")
        faces_s = time.monotonic() - started
        assert faces.returncode == 0, faces.stderr
        theirs = json.loads(faces.stdout.strip().splitlines()[-1])
        _same_faces(theirs, _host_faces(models_dir, photo, capsys))

        again = _chroot(
            root, "bash", "/root/revisit-bundle/install-edge.sh", "--bundle", f"/root/{bundle.name}", "--no-doctor"
        )
        assert again.returncode == 0 and "virtual environment /opt/revisit/.venv exists" in again.stdout
    finally:
        subprocess.run(["umount", "-l", str(root / "proc")], check=False)
    with capsys.disabled():
        print(
            f"\narm64 (qemu): install {install_s:.0f} s; revisit faces {faces_s:.1f} s: "
            f"{len(theirs['faces'])} face(s), box {theirs['faces'][0]['box']}; {machine.stdout.strip()}"
        )


# -- x86-64, every Python ----------------------------------------------------------------------------------------


def _python(version: str) -> str | None:
    """A Python X.Y: pyenv's (its shims on PATH run only the global version), else pythonX.Y on PATH."""
    candidates = []
    if shutil.which("pyenv"):
        for line in subprocess.run(["pyenv", "versions", "--bare"], capture_output=True, text=True).stdout.split():
            if line.startswith(f"{version}.") and line[len(version) + 1 :].isdigit():
                env = {**os.environ, "PYENV_VERSION": line}
                which = subprocess.run(["pyenv", "which", f"python{version}"], capture_output=True, text=True, env=env)
                candidates.append(which.stdout.strip())
    candidates.append(shutil.which(f"python{version}") or "")
    for path in filter(None, candidates):
        if subprocess.run([path, "-c", "import venv"], capture_output=True).returncode == 0:
            return path
    return None


@pytest.mark.parametrize("version", ["3.10", "3.11", "3.12", "3.13"])
def test_x86_64_bundle_installs_offline(version, tmp_path, models_dir, photo, certs, capsys):
    if os.uname().machine != "x86_64":
        pytest.skip("this machine is not x86-64")
    python = _python(version)
    if python is None:
        pytest.skip(f"no Python {version} here (pyenv install {version}, or put python{version} on PATH)")
    bundle = _bundle(tmp_path / f"revisit-x86_64-{version}.tar.gz", models_dir, "linux-x86_64", version)
    prefix = tmp_path / "root"
    started = time.monotonic()
    result = subprocess.run(
        [
            "bash",
            str(SCRIPT),
            "--prefix",
            str(prefix),
            "--bundle",
            str(bundle),
            "--python",
            python,
            "--certs",
            str(certs),
            "--camera",
            "c=rtsp://10.0.0.5/s1",
            "--no-doctor",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        stdin=subprocess.DEVNULL,
    )
    install_s = time.monotonic() - started
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    assert f"bundle for linux-x86_64 (x86_64, Python {version})" in result.stdout
    revisit = prefix / "opt/revisit/.venv/bin/revisit"
    version_of = subprocess.run([prefix / "opt/revisit/.venv/bin/python", "--version"], capture_output=True, text=True)
    assert version_of.stdout.startswith(f"Python {version}.")
    checked = subprocess.run(
        [revisit, "edge", "check-config", "--config", prefix / "etc/revisit/edge.toml"], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stderr
    faces = subprocess.run(
        [revisit, "faces", "--json", "--models", prefix / "opt/revisit/models", photo],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert faces.returncode == 0, faces.stderr
    _same_faces(json.loads(faces.stdout.strip().splitlines()[-1]), _host_faces(models_dir, photo, capsys))
    central = subprocess.run([revisit, "central", "run"], capture_output=True, text=True)
    assert central.returncode == 2 and "revisit[central]" in central.stderr  # the box has no central extra
    with capsys.disabled():
        print(f"\nx86_64 Python {version}: offline install {install_s:.0f} s")


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    from revisit.pki import CertificateAuthority, device_cn, write_identity

    root = tmp_path_factory.mktemp("ca")
    ca = CertificateAuthority.init(root / "ca")
    out = root / "box"
    write_identity(ca.issue("device", device_cn("s1", "x86-box")), ca, out, "device")
    (out / "edge.toml").write_text('site = "s1"\ndevice = "x86-box"\n[broker]\nhost = "mqtt.example.com"\n')
    return out


def test_jetson_bundles_ship_no_opencv_and_numpy_1(tmp_path, models_dir):
    """JetPack 6: Python 3.10 wheels (tomli included, which pip running on 3.11 would leave out), cuda-python,
    numpy 1.x for JetPack's OpenCV, no opencv-python-headless."""
    bundle = _bundle(tmp_path / "revisit-jetson-jp6.tar.gz", models_dir, "jetson-jp6")
    with tarfile.open(bundle) as tar:
        manifest = json.load(tar.extractfile("revisit-bundle/MANIFEST.json"))
        wheels = [n.rsplit("/", 1)[1] for n in tar.getnames() if n.endswith(".whl")]
    assert manifest["target"]["name"] == "jetson-jp6" and manifest["target"]["jetpack"] == 6
    assert manifest["target"]["python"] == "3.10" and "manylinux_2_28_aarch64" in manifest["target"]["platforms"]
    names = {w.split("-")[0].lower() for w in wheels}
    assert {"tomli", "cuda_python", "cuda_bindings", "onnxruntime", "pydantic_core", "revisit"} <= names
    assert not any(n.startswith("opencv") for n in names)
    assert all("cp310" in w or "py3-none" in w or "abi3" in w or "py2.py3" in w for w in wheels), wheels
    assert next(w for w in wheels if w.startswith("numpy-")).startswith("numpy-1.")
    assert all("aarch64" in w or "none-any" in w for w in wheels), wheels
