"""Bundle targets and the wheelhouse's closure under the target's markers (offline: wheels made here; the real
downloads are in test_offline_install.py)."""

from __future__ import annotations

import zipfile
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from revisit.deploy import TARGETS, DeployError
from revisit.deploy.bundle import _closure, marker_environment, resolve_target


def test_targets_cover_every_manylinux_tag_of_their_glibc():
    jp6 = TARGETS["jetson-jp6"].platforms()
    assert jp6[0] == "manylinux_2_35_aarch64" and jp6[-1] == "manylinux2014_aarch64"
    # onnxruntime (2_27/2_28), pydantic-core (2014 / 2_17) and cryptography (2_34) all match.
    assert {
        "manylinux_2_28_aarch64",
        "manylinux_2_27_aarch64",
        "manylinux_2_17_aarch64",
        "manylinux_2_34_aarch64",
    } <= set(jp6)
    x86 = TARGETS["linux-x86_64"].platforms()
    assert x86[0] == "manylinux_2_28_x86_64" and "manylinux_2_17_x86_64" in x86 and "manylinux2014_x86_64" in x86
    assert not any("aarch64" in t for t in x86)
    assert (TARGETS["jetson-jp6"].python, TARGETS["jetson-jp7"].python) == ("3.10", "3.12")
    for name in ("jetson-jp6", "jetson-jp7"):
        assert "opencv-python-headless" in TARGETS[name].exclude
        assert any(r.startswith("cuda-python") for r in TARGETS[name].add) and "numpy<2" in TARGETS[name].add


def test_resolve_target_and_overrides():
    target, machine, python, tags = resolve_target("linux-aarch64", None, None)
    assert (target.name, machine, python) == ("linux-aarch64", "aarch64", "3.11") and tags == target.platforms()
    _, machine, python, tags = resolve_target("linux-aarch64", None, "3.13")
    assert python == "3.13"
    _, machine, _, tags = resolve_target(None, ["manylinux_2_28_x86_64", "manylinux2014_x86_64"], "3.12")
    assert machine == "x86_64" and tags == ["manylinux_2_28_x86_64", "manylinux2014_x86_64"]
    with pytest.raises(DeployError, match="Python 3.10 to 3.13"):
        resolve_target("linux-x86_64", None, "3.9")
    with pytest.raises(DeployError, match="one machine"):
        resolve_target(None, ["manylinux2014_x86_64", "manylinux2014_aarch64"], None)
    with pytest.raises(DeployError, match="one of jetson-jp6"):
        resolve_target("jetson-jp5", None, None)


def _wheel(dir: Path, name: str, version: str, *requires: str) -> None:
    path = dir / f"{name}-{version}-py3-none-any.whl"
    meta = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n" + "".join(
        f"Requires-Dist: {r}\n" for r in requires
    )
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{name}-{version}.dist-info/METADATA", meta)


def test_closure_follows_the_targets_markers_not_this_pythons(tmp_path):
    # What pip downloads on 3.11 for a 3.10 box: the backport is missing (pip evaluated the marker for 3.11).
    _wheel(tmp_path, "app_dep", "1.0", 'backport>=2; python_version < "3.11"', 'extra_only; extra == "fancy"')
    _wheel(tmp_path, "lib", "2.0", "app_dep[fancy]", 'winonly; sys_platform == "win32"')
    top = [Requirement("lib>=2")]
    needed, missing = _closure(tmp_path, top, marker_environment("aarch64", "3.10"))
    assert needed == {"lib", "app-dep"}
    assert sorted(r.name for r in missing) == ["backport", "extra_only"]
    needed, missing = _closure(tmp_path, top, marker_environment("aarch64", "3.11"))
    assert [r.name for r in missing] == ["extra_only"]  # no backport on 3.11, never the Windows-only one
    _wheel(tmp_path, "backport", "1.0")
    _wheel(tmp_path, "extra_only", "1.0")
    with pytest.raises(DeployError, match="backport 1.0 does not satisfy backport>=2"):
        _closure(tmp_path, top, marker_environment("aarch64", "3.10"))
