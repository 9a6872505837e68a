"""`revisit deploy bundle`: an offline install bundle for one kind of box.

A bundle (revisit-bundle/ in a .tar.gz) holds the project's wheel and a wheelhouse of the edge's dependencies for
the target's machine and Python (the base install: the `central` extra is never shipped), the verified models,
install-edge.sh, the systemd unit, and MANIFEST.json (the target, the sha256 of every file). install-edge.sh checks
the target against the box before it installs anything.

pip evaluates environment markers (`tomli; python_version < "3.11"`) with the Python that runs it, even when it
downloads for another one, so the wheelhouse is completed here: every wheel's requirements are evaluated for the
target and whatever is missing is downloaded, until the set is closed; wheels the target does not need are dropped.
"""

from __future__ import annotations

import argparse
import datetime as dt
import email.parser
import hashlib
import json
import os
import platform as host_platform
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name, parse_wheel_filename

from revisit import __version__
from revisit.deploy.errors import DeployError

REPO = Path(__file__).resolve().parents[2]
# What the installer and the bundle need from a source checkout (relative to it).
BUNDLE_FILES = {
    "install-edge.sh": "deploy/install-edge.sh",
    "README.md": "deploy/README.md",
    "edge.example.toml": "deploy/edge.example.toml",
    "systemd/revisit-edge.service": "systemd/revisit-edge.service",
}
REQUIREMENTS = "wheelhouse/requirements.txt"  # what install-edge.sh installs from the wheelhouse
MACHINES = ("x86_64", "aarch64")


@dataclass(frozen=True)
class Target:
    """A kind of box: its machine, Python and C library, and what its system provides."""

    name: str
    description: str
    machine: str  # `uname -m` of the box
    python: str  # X.Y of the Python the edge runs on
    glibc: tuple[int, int]  # the newest manylinux the box runs (its glibc)
    jetpack: int | None = None  # JetPack major: JetPack's OpenCV, TensorRT and CUDA are used (system site-packages)
    exclude: tuple[str, ...] = ()  # distributions not shipped: the box's system packages replace them
    add: tuple[str, ...] = ()  # requirements shipped besides the project's

    def platforms(self) -> list[str]:
        """Every manylinux tag the box runs, newest first: wheels are tagged anywhere from manylinux2014
        (pydantic-core) to manylinux_2_27/2_28 (onnxruntime, numpy) and pip matches one tag at a time."""
        major, newest = self.glibc
        tags = [f"manylinux_{major}_{minor}_{self.machine}" for minor in range(newest, 16, -1)]
        return [*tags, f"manylinux2014_{self.machine}"]


# JetPack's OpenCV (GStreamer, hardware decode) and TensorRT are built for the system numpy 1.x: numpy<2 there.
TARGETS = {
    t.name: t
    for t in (
        Target(
            "jetson-jp6",
            "NVIDIA Jetson Orin on JetPack 6 (Ubuntu 22.04, Python 3.10, CUDA 12)",
            "aarch64",
            "3.10",
            (2, 35),
            jetpack=6,
            exclude=("opencv-python-headless",),
            add=("cuda-python>=12.2,<13", "numpy<2"),
        ),
        Target(
            "jetson-jp7",
            "NVIDIA Jetson on JetPack 7 (Ubuntu 24.04, Python 3.12, CUDA 13)",
            "aarch64",
            "3.12",
            (2, 39),
            jetpack=7,
            exclude=("opencv-python-headless",),
            add=("cuda-python>=13,<14", "numpy<2"),
        ),
        Target(
            "linux-aarch64",
            "64-bit ARM Linux with glibc >= 2.28 (Debian 10+, Ubuntu 20.04+, Raspberry Pi OS 64-bit)",
            "aarch64",
            "3.11",
            (2, 28),
        ),
        Target(
            "linux-x86_64",
            "x86-64 Linux with glibc >= 2.28 (Debian 10+, Ubuntu 20.04+, RHEL 8+)",
            "x86_64",
            "3.11",
            (2, 28),
        ),
    )
}


def _pip(*args: str) -> None:
    # The bundle is built from the registry and this machine's pip configuration (indexes, find-links).
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    print("+ " + " ".join(cmd), file=sys.stderr)
    result = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if result.returncode != 0:
        raise DeployError(f"pip failed ({result.returncode}):\n{result.stdout[-3000:]}")


def _copy_source(source: Path, dest: Path) -> None:
    """The project's sources without caches, builds, venvs, tests or data: its wheel is built from this copy."""
    ignore = shutil.ignore_patterns(
        ".git",
        ".venv",
        "__pycache__",
        "*.egg-info",
        "build",
        "dist",
        "tests",
        ".pytest_cache",
        ".ruff_cache",
        "*.onnx",
        "*.engine",
        "models-data",
        "revisit-data",
        "var",
    )
    shutil.copytree(source, dest, ignore=ignore)


# -- the wheelhouse ----------------------------------------------------------------------------------------------


def marker_environment(machine: str, python: str) -> dict[str, str]:
    """PEP 508 marker values of a CPython `python` on Linux/`machine`."""
    return {
        "implementation_name": "cpython",
        "implementation_version": f"{python}.0",
        "os_name": "posix",
        "platform_machine": machine,
        "platform_python_implementation": "CPython",
        "platform_release": "",
        "platform_system": "Linux",
        "platform_version": "",
        "python_full_version": f"{python}.0",
        "python_version": python,
        "sys_platform": "linux",
    }


def _wheel_requires(wheel: Path) -> list[Requirement]:
    with zipfile.ZipFile(wheel) as zf:
        name = next(n for n in zf.namelist() if n.endswith(".dist-info/METADATA") and n.count("/") == 1)
        meta = email.parser.Parser().parsestr(zf.read(name).decode())
    return [Requirement(r) for r in meta.get_all("Requires-Dist") or []]


def _applies(req: Requirement, env: dict[str, str], extras: frozenset[str] = frozenset()) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": extra}) for extra in {"", *extras})


def _plain(req: Requirement) -> str:
    """The requirement without its marker (already evaluated for the target)."""
    return str(Requirement(str(req).split(";")[0]))


def _wheels(wheelhouse: Path) -> dict[str, Path]:
    found: dict[str, Path] = {}
    for path in sorted(wheelhouse.glob("*.whl")):
        name = canonicalize_name(parse_wheel_filename(path.name)[0])
        if name in found:
            raise DeployError(f"two wheels of {name} in the wheelhouse: {found[name].name}, {path.name}")
        found[name] = path
    return found


def _closure(wheelhouse: Path, top: list[Requirement], env: dict[str, str]) -> tuple[set[str], list[Requirement]]:
    """(distributions the target needs that the wheelhouse has, requirements it lacks)."""
    wheels = _wheels(wheelhouse)
    needed: set[str] = set()
    missing: list[Requirement] = []
    seen: set[tuple[str, frozenset[str]]] = set()
    queue = [(req, frozenset(req.extras)) for req in top]
    while queue:
        req, extras = queue.pop()
        name = canonicalize_name(req.name)
        if name not in wheels:
            missing.append(req)
            continue
        version = parse_wheel_filename(wheels[name].name)[1]
        if not req.specifier.contains(version, prereleases=True):
            raise DeployError(f"the wheelhouse's {name} {version} does not satisfy {req}: the target's set conflicts")
        needed.add(name)
        if (name, extras) in seen:
            continue
        seen.add((name, extras))
        for dep in _wheel_requires(wheels[name]):
            if _applies(dep, env, extras):
                queue.append((dep, frozenset(dep.extras)))
    return needed, missing


def fill_wheelhouse(
    wheelhouse: Path, project_wheel: Path, machine: str, python: str, platforms: list[str] | None, target: Target | None
) -> list[str]:
    """Download the binary wheels `project_wheel` needs on the target into `wheelhouse`; returns the top-level
    requirements (markers evaluated for the target) that install-edge.sh installs."""
    env = marker_environment(machine, python)
    exclude = {canonicalize_name(n) for n in (target.exclude if target else ())}
    top = [r for r in _wheel_requires(project_wheel) if _applies(r, env) and canonicalize_name(r.name) not in exclude]
    top += [Requirement(r) for r in (target.add if target else ())]
    flags = ["--only-binary=:all:", "--dest", str(wheelhouse), "--python-version", python]
    for tag in platforms or []:
        flags += ["--platform", tag]
    if platforms:
        flags += ["--implementation", "cp"]
    with tempfile.TemporaryDirectory(prefix="revisit-reqs-") as tmp:
        wanted = [_plain(r) for r in top]
        for _round in range(6):
            reqs = Path(tmp) / "requirements.txt"
            reqs.write_text("\n".join(wanted) + "\n")
            # Keep what is already downloaded: a later round only adds what markers hid from pip.
            pins = Path(tmp) / "constraints.txt"
            pins.write_text(
                "".join(
                    f"{name}=={parse_wheel_filename(p.name)[1]}\n"
                    for name, p in _wheels(wheelhouse).items()
                    if name != "revisit"
                )
            )
            _pip("download", *flags, "-c", str(pins), "-r", str(reqs))
            needed, missing = _closure(wheelhouse, top, env)
            if not missing:
                break
            wanted = sorted({_plain(r) for r in missing})
            print(f"the target also needs {', '.join(wanted)} (markers pip evaluated for this Python)", file=sys.stderr)
        else:
            raise DeployError(f"the wheelhouse does not close: still missing {', '.join(map(str, missing))}")
        for name, path in _wheels(wheelhouse).items():
            if name not in needed and name != "revisit":
                path.unlink()  # downloaded for this machine's markers only
        bad = sorted(exclude & needed)
        if bad:
            raise DeployError(f"{', '.join(bad)} must not be shipped to {target.name if target else 'the target'}")
    return [_plain(r) for r in top]


# -- the bundle ---------------------------------------------------------------------------------------------------


def _machine_of(platforms: list[str]) -> str:
    machines = {m for tag in platforms for m in (*MACHINES, "armv7l", "i686", "ppc64le", "s390x") if tag.endswith(m)}
    if len(machines) != 1:
        raise DeployError(f"--platform {' '.join(platforms)}: expected tags of one machine, e.g. manylinux2014_aarch64")
    return machines.pop()


def resolve_target(
    name: str | None, platforms: list[str] | None, python_version: str | None
) -> tuple[Target | None, str, str, list[str] | None]:
    """(target, machine, Python X.Y, pip platform tags or None for this machine's)."""
    target = None
    if name:
        if name not in TARGETS:
            raise DeployError(f"--target {name!r}: one of {', '.join(TARGETS)}")
        target = TARGETS[name]
    python = python_version or (target.python if target else f"{sys.version_info.major}.{sys.version_info.minor}")
    major, _, minor = python.partition(".")
    if not (major == "3" and minor.isdigit() and 10 <= int(minor) <= 13):
        raise DeployError(f"--python-version {python}: Revisit runs on Python 3.10 to 3.13 (X.Y)")
    if platforms:
        return target, _machine_of(platforms), python, list(platforms)
    if target:
        return target, target.machine, python, target.platforms()
    return None, host_platform.machine(), python, None


def build_bundle(
    out: Path,
    models: Path | None,
    source: Path = REPO,
    deps: bool = True,
    platform: str | list[str] | None = None,
    python_version: str | None = None,
    build_isolation: bool = True,
    target: str | None = None,
) -> dict:
    """Write `out` (a .tar.gz holding revisit-bundle/): wheelhouse/, models/, install-edge.sh, the unit file,
    README.md and MANIFEST.json (the target, sha256 of every file). Returns the manifest.

    target: a name of TARGETS (None: this machine). platform/python_version override the target's tags/Python."""
    from revisit.models.manifest import Manifest
    from revisit.models.store import models_dir, resolve, status

    platforms = [platform] if isinstance(platform, str) else platform
    spec, machine, python, tags = resolve_target(target, platforms, python_version)
    source = Path(source).resolve()
    missing = [rel for rel in [*BUNDLE_FILES.values(), "pyproject.toml"] if not (source / rel).is_file()]
    if missing:
        raise DeployError(f"{source} is not a Revisit source checkout (missing {', '.join(missing)}): use --source")
    directory = models_dir(models)
    specs = [s for s in Manifest.load() if status(s, directory) == "verified"]
    absent = [s.name for s in Manifest.load() if s.default and s not in specs]
    if absent:
        raise DeployError(
            f"default model(s) {', '.join(absent)} not verified in {directory}: "
            f"`revisit models fetch --models {directory}` first, or give --models DIR"
        )
    with tempfile.TemporaryDirectory(prefix="revisit-bundle-") as tmp:
        root = Path(tmp) / "revisit-bundle"
        wheelhouse = root / "wheelhouse"
        wheelhouse.mkdir(parents=True)
        src = Path(tmp) / "src"
        _copy_source(source, src)
        _pip(
            "wheel",
            "--no-deps",
            "--wheel-dir",
            str(wheelhouse),
            *([] if build_isolation else ["--no-build-isolation"]),
            str(src),
        )
        wheels = sorted(wheelhouse.glob("revisit-*.whl"))
        if len(wheels) != 1:
            raise DeployError(f"expected one revisit wheel, found {[w.name for w in wheels]}")
        requirements: list[str] = []
        if deps:
            requirements = fill_wheelhouse(wheelhouse, wheels[0], machine, python, tags, spec)
            (root / REQUIREMENTS).write_text(
                "# Installed by install-edge.sh from this folder only (--no-index); markers already evaluated for "
                "the target.\n" + "\n".join(requirements) + "\n"
            )
        (root / "models").mkdir()
        for model in specs:
            shutil.copyfile(resolve(model, directory).path, root / "models" / Path(model.file).name)
        for name, rel in BUNDLE_FILES.items():
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source / rel, root / name)
        manifest = {
            "revisit": __version__,
            "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
            "target": {
                "name": spec.name if spec else ("custom" if tags else "this-machine"),
                "description": spec.description
                if spec
                else (f"--platform {' '.join(tags)}" if tags else f"the machine that built it ({machine})"),
                "machine": machine,
                "python": python,
                "platforms": tags or ["this machine's"],
                "jetpack": spec.jetpack if spec else None,
                "excluded": list(spec.exclude) if spec else [],
            },
            # Kept for bundles' readers before targets existed.
            "python": python,
            "platform": " ".join(tags) if tags else "this machine's",
            "dependencies": deps,
            "requirements": requirements,
            "models": [s.name for s in specs],
            "files": {str(p.relative_to(root)): _sha256(p) for p in sorted(root.rglob("*")) if p.is_file()},
        }
        (root / "MANIFEST.json").write_text(json.dumps(manifest, indent=2) + "\n")
        out = Path(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp_out = out.with_name(f".{out.name}.tmp")
        with tarfile.open(tmp_out, "w:gz") as tar:
            tar.add(root, arcname="revisit-bundle")
        os.replace(tmp_out, out)
    return manifest


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def run_bundle(args: argparse.Namespace) -> int:
    if args.list_targets:
        for t in TARGETS.values():
            print(f"{t.name:14} Python {t.python}  {t.description}")
        return 0
    if not args.out:
        raise DeployError("give --out FILE.tar.gz (and --target, see --list-targets)")
    manifest = build_bundle(
        args.out,
        args.models,
        args.source,
        deps=not args.no_deps,
        platform=args.platform,
        python_version=args.python_version,
        build_isolation=not args.no_build_isolation,
        target=args.target,
    )
    wheels = [f for f in manifest["files"] if f.startswith("wheelhouse/") and f.endswith(".whl")]
    size = Path(args.out).stat().st_size / 1e6
    target = manifest["target"]
    print(
        f"{args.out}: {size:.1f} MB, target {target['name']} ({target['machine']}, Python {target['python']}), "
        f"{len(wheels)} wheel(s), models {', '.join(manifest['models'])}"
    )
    print(f"on the box: tar xzf {Path(args.out).name} && sudo revisit-bundle/install-edge.sh --help")
    return 0
