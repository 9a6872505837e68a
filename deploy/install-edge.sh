#!/usr/bin/env bash
# Revisit edge installer: installs the edge daemon on a site box from an offline bundle (`revisit deploy bundle`).
# Idempotent: run it again with the same flags (or a newer bundle) and it converges; an existing
# /etc/revisit/edge.toml is kept. See deploy/README.md for the whole procedure.
set -euo pipefail

usage() {
    cat <<'EOF'
usage: install-edge.sh [options]

  --bundle FILE|DIR    the bundle (revisit-bundle.tar.gz or its unpacked folder; default: this script's folder)
  --site ID            site id          \
  --device ID          device id         | default: from the edge.toml in --certs DIR (revisit deploy enrol)
  --broker HOST:PORT   MQTT broker      /
  --certs DIR          the box's identity from `revisit deploy enrol`: ca.pem, device.pem, device.key
  --camera ID=URL      a camera (repeatable), e.g. --camera door=rtsp://user:pass@10.0.0.5/stream1
  --no-systemd         do not install or start the systemd unit
  --no-doctor          do not run `revisit edge doctor` at the end
  --prefix DIR         install under DIR (a trial or test root): no system user, no systemctl
  --python PATH        the Python of the virtual environment; must be the bundle's (MANIFEST.json: target)
                       (default: on a Jetson /usr/bin/python3, JetPack's; else python3.X of the bundle, else python3)
  --deps-from DIR      tests/development only: reuse the packages in DIR (a site-packages folder) instead of
                       the bundle's dependencies (for bundles made with `revisit deploy bundle --no-deps`)
  -h, --help           this help

On a Jetson (JetPack 6 or 7, from /etc/nv_tegra_release) the venv sees the system's packages
(--system-site-packages): JetPack's TensorRT, CUDA and OpenCV/GStreamer; the TensorRT engines are built at the end.
Elsewhere the venv is isolated. The bundle's target (machine, Python, Jetson or not) must match this box.

Installs: /opt/revisit/.venv (the software), /opt/revisit/models (verified models), /etc/revisit/edge.toml
(created from the flags unless it exists), /etc/revisit/tls/ (the identity), /var/lib/revisit-edge (the spool),
the `revisit` system user, and the revisit-edge systemd unit (enabled and started).
EOF
}

say() { printf '==> %s\n' "$*"; }
note() { printf '    %s\n' "$*"; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() { printf 'install-edge: error: %s\n' "$*" >&2; exit 1; }
need() { [[ $# -ge 2 && -n "$2" ]] || die "$1 needs a value (see --help)"; }

PREFIX="" BUNDLE="" SITE="" DEVICE="" BROKER="" CERTS="" PYTHON="" DEPS_FROM=""
SYSTEMD=1 DOCTOR=1
CAMERAS=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --bundle) need "$@"; BUNDLE="$2"; shift 2 ;;
        --site) need "$@"; SITE="$2"; shift 2 ;;
        --device) need "$@"; DEVICE="$2"; shift 2 ;;
        --broker) need "$@"; BROKER="$2"; shift 2 ;;
        --certs) need "$@"; CERTS="$2"; shift 2 ;;
        --camera) need "$@"; CAMERAS+=("$2"); shift 2 ;;
        --no-systemd) SYSTEMD=0; shift ;;
        --no-doctor) DOCTOR=0; shift ;;
        --prefix) need "$@"; PREFIX="$(realpath -m "$2")"; shift 2 ;;
        --python) need "$@"; PYTHON="$2"; shift 2 ;;
        --deps-from) need "$@"; DEPS_FROM="$(realpath -m "$2")"; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) die "unknown option $1 (see --help)" ;;
    esac
done

OPT="$PREFIX/opt/revisit"
VENV="$OPT/.venv"
MODELS="$OPT/models"
ETC="$PREFIX/etc/revisit"
TLS="$ETC/tls"
CONFIG="$ETC/edge.toml"
STATE="$PREFIX/var/lib/revisit-edge"
UNIT_DIR="$PREFIX/etc/systemd/system"
JETSON_RELEASE="${REVISIT_JETSON_RELEASE:-/etc/nv_tegra_release}"  # overridable for tests
SERVICE_USER=revisit

# As root without --prefix this is a real install: create the user, own files, run systemctl.
REAL=0
if [[ -z "$PREFIX" ]]; then
    [[ $EUID -eq 0 ]] || die "run as root (sudo $0 ...), or try it under a throw-away root with --prefix DIR"
    REAL=1
fi
MACHINE="$(uname -m)"

# A Jetson: L4T R36 is JetPack 6 (Ubuntu 22.04, Python 3.10), R38 and later JetPack 7 (Ubuntu 24.04, Python 3.12).
JETSON=0 JETPACK="" L4T=""
if [[ -f "$JETSON_RELEASE" ]]; then
    JETSON=1
    L4T="$(sed -n 's/^# R\([0-9][0-9]*\) (release), REVISION: \([0-9.]*\).*/\1.\2/p' "$JETSON_RELEASE" | head -n 1)"
elif [[ -z "${REVISIT_JETSON_RELEASE:-}" ]] && L4T="$(dpkg-query -W -f='${Version}' nvidia-l4t-core 2>/dev/null)" \
    && [[ -n "$L4T" ]]; then
    JETSON=1  # no release file, but L4T's core package, e.g. 36.4.3-20250107174145
    L4T="${L4T%%-*}"
fi
if (( JETSON )); then
    case "${L4T%%.*}" in
        36 | 37) JETPACK=6 ;;
        38 | 39 | 4[0-9]) JETPACK=7 ;;
        "") die "$JETSON_RELEASE does not say the L4T release (expected '# R36 (release), REVISION: ...')" ;;
        *) die "this Jetson runs L4T R$L4T (JetPack 5 or older, Python 3.8): Revisit needs JetPack 6 or 7" ;;
    esac
fi

# Without a configuration and without a terminal to prompt on, every value must come from flags (or the
# enrolment's edge.toml): say what is missing before installing anything.
snippet_has() { [[ -n "$CERTS" && -f "$CERTS/edge.toml" ]] && grep -q "^$1 = " "$CERTS/edge.toml"; }
if [[ ! -f "$CONFIG" && ! -t 0 ]]; then
    missing=()
    [[ -n "$SITE" ]] || snippet_has site || missing+=("--site")
    [[ -n "$DEVICE" ]] || snippet_has device || missing+=("--device")
    [[ -n "$BROKER" ]] || snippet_has host || missing+=("--broker")
    [[ ${#CAMERAS[@]} -gt 0 ]] || missing+=("--camera ID=URL")
    [[ ${#missing[@]} -eq 0 ]] || die "$CONFIG does not exist yet: give ${missing[*]} (or --certs DIR from revisit deploy enrol)"
fi

# -- the bundle -------------------------------------------------------------------------------------------------
WORK=""
cleanup() { [[ -n "$WORK" ]] && rm -rf "$WORK"; return 0; }
trap cleanup EXIT
if [[ -z "$BUNDLE" ]]; then
    BUNDLE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
fi
if [[ -f "$BUNDLE" ]]; then
    say "unpacking $BUNDLE"
    WORK="$(mktemp -d)"
    tar -xzf "$BUNDLE" -C "$WORK"
    BUNDLE="$WORK/revisit-bundle"
fi
[[ -d "$BUNDLE/wheelhouse" ]] || die "$BUNDLE is not a Revisit bundle (no wheelhouse/): give --bundle FILE.tar.gz"
shopt -s nullglob
WHEELS=("$BUNDLE"/wheelhouse/revisit-*.whl)
shopt -u nullglob
[[ ${#WHEELS[@]} -eq 1 ]] || die "$BUNDLE/wheelhouse must hold exactly one revisit-*.whl (found ${#WHEELS[@]})"
WHEEL="${WHEELS[0]}"

# -- the bundle's target against this box ---------------------------------------------------------------------
# Any python3 reads MANIFEST.json; the venv's Python is chosen from what it says.
READER="${PYTHON:-$(command -v python3 || true)}"
[[ -n "$READER" ]] || die "no python3 found: install Python 3.10-3.13 (Debian/Ubuntu: apt install python3 python3-venv)"
TARGET_NAME="" TARGET_MACHINE="" TARGET_PY="" TARGET_JETPACK=""
if [[ -f "$BUNDLE/MANIFEST.json" ]]; then
    read -r TARGET_NAME TARGET_MACHINE TARGET_PY TARGET_JETPACK < <("$READER" - "$BUNDLE/MANIFEST.json" <<'PY'
import json, sys
m = json.load(open(sys.argv[1]))
t = m.get("target") or {}
print(t.get("name") or "-", t.get("machine") or "-", t.get("python") or m.get("python") or "-", t.get("jetpack") or "-")
PY
    ) || die "cannot read $BUNDLE/MANIFEST.json"
    [[ "$TARGET_MACHINE" == "-" ]] && TARGET_MACHINE=""
    [[ "$TARGET_PY" == "-" ]] && TARGET_PY=""
    [[ "$TARGET_JETPACK" == "-" ]] && TARGET_JETPACK=""
    say "bundle for $TARGET_NAME (${TARGET_MACHINE:-any machine}, Python ${TARGET_PY:-any}); this box: $MACHINE$( (( JETSON )) && echo ", Jetson L4T R$L4T (JetPack $JETPACK)")"
fi
rebuild="build one for this box: revisit deploy bundle --target"
if (( JETSON )); then
    rebuild+=" jetson-jp$JETPACK"
else
    rebuild+=" linux-$MACHINE"
fi
[[ -z "$TARGET_MACHINE" || "$TARGET_MACHINE" == "$MACHINE" ]] \
    || die "the bundle is for $TARGET_MACHINE ($TARGET_NAME) and this box is $MACHINE: $rebuild"
if (( JETSON )) && [[ -z "$TARGET_JETPACK" ]]; then
    die "this box is a Jetson (JetPack $JETPACK) and the bundle ($TARGET_NAME) is not: it would replace JetPack's OpenCV/GStreamer and cannot use TensorRT; $rebuild"
fi
if (( ! JETSON )) && [[ -n "$TARGET_JETPACK" ]]; then
    die "the bundle is for a Jetson on JetPack $TARGET_JETPACK and this box is not one (no $JETSON_RELEASE): $rebuild"
fi
if (( JETSON )) && [[ "$TARGET_JETPACK" != "$JETPACK" ]]; then
    die "the bundle is for JetPack $TARGET_JETPACK and this Jetson runs JetPack $JETPACK: $rebuild"
fi

# -- Python -----------------------------------------------------------------------------------------------------
if [[ -z "$PYTHON" ]]; then
    if (( JETSON )); then
        PYTHON=/usr/bin/python3  # JetPack's TensorRT and OpenCV bindings exist for this one only
    else
        PYTHON="$( { [[ -n "$TARGET_PY" ]] && command -v "python$TARGET_PY"; } || command -v python3 || true)"
    fi
fi
[[ -x "$PYTHON" ]] || PYTHON="$(command -v "$PYTHON" || true)"
[[ -n "$PYTHON" ]] || die "no python3 found: install Python ${TARGET_PY:-3.10-3.13} (Debian/Ubuntu: apt install python3 python3-venv)"
PY_VERSION="$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')"
if [[ -n "$TARGET_PY" ]]; then
    [[ "$PY_VERSION" == "$TARGET_PY" ]] \
        || die "the bundle's wheels are for Python $TARGET_PY and $PYTHON is $PY_VERSION: give --python PATH to a $TARGET_PY, or $rebuild --python-version $PY_VERSION"
fi
"$PYTHON" -c 'import sys; sys.exit(0 if (3, 10) <= sys.version_info[:2] <= (3, 13) else 1)' \
    || die "$PYTHON is Python $PY_VERSION; Revisit runs on 3.10 to 3.13 (give --python PATH)"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
    || die "$PYTHON cannot create virtual environments: apt install python$PY_VERSION-venv"

# On a Jetson, JetPack's own packages are used from the system Python: check them before installing anything.
if (( JETSON )); then
    say "checking JetPack $JETPACK's Python packages ($PYTHON)"
    JP_VERSION="$(dpkg-query -W -f='${Version}' nvidia-jetpack 2>/dev/null || true)"
    [[ -n "$JP_VERSION" ]] && note "nvidia-jetpack $JP_VERSION"
    missing=()
    check() {  # MODULE-TEST WHAT APT-PACKAGES
        if "$PYTHON" -c "$1" >/dev/null 2>&1; then
            note "$2: ok"
        else
            missing+=("$2 (sudo apt install $3)")
        fi
    }
    check 'import tensorrt' "TensorRT's Python bindings" "python3-libnvinfer, or all of JetPack: nvidia-jetpack"
    check 'import cv2' "OpenCV's Python bindings" "nvidia-opencv (JetPack's, with GStreamer), or Ubuntu's python3-opencv"
    if [[ ${#missing[@]} -gt 0 ]]; then
        printf 'install-edge: error: %s\n' "this Jetson's Python lacks what Revisit uses from JetPack:" >&2
        printf '    %s\n' "${missing[@]}" >&2
        die "install those packages, then run this installer again (nothing was installed)"
    fi
    "$PYTHON" -c 'import cv2, re, sys; sys.exit(not re.search(r"GStreamer:\s+YES", cv2.getBuildInformation()))' \
        || warn "this OpenCV is built without GStreamer: no hardware decoding (JetPack's nvidia-opencv has it)"
    "$PYTHON" -c 'import gi; gi.require_version("Gst", "1.0"); from gi.repository import Gst' 2>/dev/null \
        || warn "GStreamer's Python bindings are missing: sudo apt install python3-gi gir1.2-gstreamer-1.0 gstreamer1.0-plugins-bad"
fi

say "checking the bundle's files against MANIFEST.json"
if [[ -f "$BUNDLE/MANIFEST.json" ]]; then
    "$PYTHON" - "$BUNDLE" <<'PY'
import hashlib, json, sys
from pathlib import Path
root = Path(sys.argv[1])
manifest = json.loads((root / "MANIFEST.json").read_text())
bad = [name for name, digest in manifest["files"].items()
       if not (root / name).is_file() or hashlib.sha256((root / name).read_bytes()).hexdigest() != digest]
if bad:
    sys.exit(f"install-edge: error: bundle files missing or corrupt: {', '.join(bad)} (copy the bundle again)")
print(f"    revisit {manifest['revisit']}, {len(manifest['files'])} files verified")
PY
else
    warn "no MANIFEST.json in the bundle: files not checked"
fi

# -- the system user --------------------------------------------------------------------------------------------
if (( REAL )); then
    if id -u "$SERVICE_USER" >/dev/null 2>&1; then
        say "system user $SERVICE_USER exists"
    else
        say "creating system user $SERVICE_USER"
        useradd --system --user-group --home-dir /var/lib/revisit-edge --no-create-home \
            --shell /usr/sbin/nologin "$SERVICE_USER"
    fi
    if (( JETSON )) && getent group video >/dev/null; then
        usermod -a -G video "$SERVICE_USER"  # /dev/nvhost-*, /dev/nvmap: the GPU and hardware decoders
    fi
else
    say "no system user (--prefix): files stay owned by $(id -un)"
fi
owner() { (( REAL )) && chown "$@"; return 0; }

# -- the software -----------------------------------------------------------------------------------------------
# The bundle is self-contained: no pip configuration (indexes, find-links, constraints) of this machine applies.
PIP=(env PIP_CONFIG_FILE=/dev/null "$VENV/bin/python" -m pip --disable-pip-version-check --no-input --quiet)
SYSTEM_SITE=false VENV_FLAGS=()
(( JETSON )) && SYSTEM_SITE=true VENV_FLAGS=(--system-site-packages)
if [[ -x "$VENV/bin/python" ]] \
    && [[ "$("$VENV/bin/python" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null)" == "$PY_VERSION" ]] \
    && grep -qx "include-system-site-packages = $SYSTEM_SITE" "$VENV/pyvenv.cfg"; then
    say "virtual environment $VENV exists"
else
    if [[ -d "$VENV" ]]; then
        say "replacing virtual environment $VENV (another Python, or system packages $( (( JETSON )) && echo needed || echo "not wanted"))"
        rm -rf "$VENV"
    else
        say "creating virtual environment $VENV$( (( JETSON )) && echo " (with the system's packages: JetPack)")"
    fi
    mkdir -p "$OPT"
    "$PYTHON" -m venv "${VENV_FLAGS[@]}" "$VENV"
fi
if [[ -n "$DEPS_FROM" ]]; then
    [[ -d "$DEPS_FROM" ]] || die "--deps-from $DEPS_FROM is not a directory"
    say "installing $(basename "$WHEEL") (dependencies from $DEPS_FROM: tests/development only)"
    SITE_PACKAGES="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    printf '%s\n' "$DEPS_FROM" > "$SITE_PACKAGES/revisit-deps.pth"
    "${PIP[@]}" install --no-index --no-deps --force-reinstall "$WHEEL"
else
    say "installing $(basename "$WHEEL") and its dependencies from the bundle (offline)"
    REQS="$BUNDLE/wheelhouse/requirements.txt"
    if [[ ! -f "$REQS" ]]; then  # a bundle made before targets existed
        "${PIP[@]}" install --no-index --find-links "$BUNDLE/wheelhouse" "$WHEEL" \
            || die "offline install failed: was the bundle built for this machine's platform and Python? (see README)"
    elif (( JETSON )); then
        # JetPack's OpenCV replaces opencv-python-headless, which the bundle does not ship: the project's wheel
        # goes in without its dependency list, after everything else it needs.
        "${PIP[@]}" install --no-index --find-links "$BUNDLE/wheelhouse" -r "$REQS" \
            || die "offline install of the bundle's wheels failed (see above)"
    else
        "${PIP[@]}" install --no-index --find-links "$BUNDLE/wheelhouse" -r "$REQS" "$WHEEL" \
            || die "offline install failed: was the bundle built for this machine's platform and Python? (see README)"
    fi
    "${PIP[@]}" install --no-index --no-deps --force-reinstall "$WHEEL"
fi
if (( JETSON )); then
    # The venv's packages (numpy above all) must not break JetPack's: OpenCV and TensorRT are built for numpy 1.x.
    "$VENV/bin/python" -c 'import numpy, cv2, tensorrt' \
        || die "JetPack's OpenCV or TensorRT does not load in $VENV (see above): the bundle's numpy must be < 2"
    "$VENV/bin/python" - <<'PY' || die "no working CUDA Python binding: the bundle ships cuda-python; the CUDA runtime comes with JetPack (sudo apt install nvidia-jetpack), or install pycuda (sudo apt install python3-pycuda)"
try:
    from cuda.bindings import runtime as rt  # cuda-python >= 12.6
except ImportError:
    try:
        from cuda import cudart as rt
    except ImportError:
        import pycuda.driver as drv
        drv.init()
        print(f"    pycuda: {drv.Device.count()} CUDA device(s)")
        raise SystemExit(0)
err, count = rt.cudaGetDeviceCount()
if int(err) != 0 or count < 1:
    raise SystemExit(f"install-edge: error: cudaGetDeviceCount: {err} ({count} devices)")
print(f"    cuda-python: {count} CUDA device(s)")
PY
fi
REVISIT="$VENV/bin/revisit"
note "$("$REVISIT" --version)"
# The reference the unit's Documentation= and the generated configuration point to.
install -D -m 0644 "$BUNDLE/edge.example.toml" "$OPT/deploy/edge.example.toml"
install -D -m 0644 "$BUNDLE/README.md" "$OPT/deploy/README.md"
if (( REAL )); then
    ln -sfn "$REVISIT" /usr/local/bin/revisit
fi

# -- models -----------------------------------------------------------------------------------------------------
say "installing models into $MODELS"
mkdir -p "$MODELS"
for file in "$BUNDLE"/models/*; do
    [[ -f "$file" ]] || continue
    target="$MODELS/$(basename "$file")"
    if cmp -s "$file" "$target"; then
        note "$(basename "$file"): up to date"
    else
        install -m 0644 "$file" "$target"
        note "$(basename "$file"): installed"
    fi
done
"$REVISIT" models list --models "$MODELS" | sed 's/^/    /'
"$REVISIT" models list --models "$MODELS" --json | "$VENV/bin/python" -c '
import json, sys
from pathlib import Path
shipped = {p.name for p in Path(sys.argv[1]).iterdir()}
bad = [r["name"] for r in json.load(sys.stdin) if r["file"] in shipped and r["status"] != "verified"]
sys.exit(f"install-edge: error: models do not verify: {bad}" if bad else 0)
' "$BUNDLE/models"

# -- identity ---------------------------------------------------------------------------------------------------
if [[ -n "$CERTS" ]]; then
    for f in ca.pem device.pem device.key; do
        [[ -f "$CERTS/$f" ]] || die "--certs $CERTS has no $f (use the folder written by revisit deploy enrol)"
    done
    say "installing the box's identity into $TLS"
    install -d -m 0750 "$TLS"
    owner root:"$SERVICE_USER" "$TLS"
    install -m 0644 "$CERTS/ca.pem" "$TLS/ca.pem"
    install -m 0644 "$CERTS/device.pem" "$TLS/device.pem"
    install -m 0640 "$CERTS/device.key" "$TLS/device.key"
    owner root:"$SERVICE_USER" "$TLS/device.key"
fi

# -- configuration ----------------------------------------------------------------------------------------------
if [[ -f "$CONFIG" ]]; then
    say "keeping the existing $CONFIG (edit it, or delete it and run again to rewrite it from flags)"
    [[ -n "$SITE$DEVICE$BROKER" || ${#CAMERAS[@]} -gt 0 ]] && warn "--site/--device/--broker/--camera ignored: $CONFIG exists"
else
    SNIPPET=""
    [[ -n "$CERTS" && -f "$CERTS/edge.toml" ]] && SNIPPET="$CERTS/edge.toml"
    if [[ -t 0 ]]; then  # prompt for what neither the flags nor the enrolment snippet give
        [[ -n "$SITE" ]] || snippet_has site || read -r -p "site id: " SITE
        [[ -n "$DEVICE" ]] || snippet_has device || read -r -p "device id: " DEVICE
        [[ -n "$BROKER" ]] || snippet_has host || read -r -p "broker HOST:PORT: " BROKER
        if [[ ${#CAMERAS[@]} -eq 0 ]]; then
            read -r -p "camera ID=URL (e.g. door=rtsp://user:pass@10.0.0.5/stream1): " cam
            [[ -n "$cam" ]] && CAMERAS+=("$cam")
        fi
    fi
    say "writing $CONFIG"
    install -d -m 0750 "$ETC"
    owner root:"$SERVICE_USER" "$ETC"
    TLS_DIR="" && [[ -f "$TLS/device.pem" ]] && TLS_DIR="$TLS"
    ENGINE_CACHE="" && (( JETSON )) && ENGINE_CACHE="$STATE/engines"
    umask 027
    "$VENV/bin/python" - "$CONFIG" "$SITE" "$DEVICE" "$BROKER" "$TLS_DIR" "$STATE" "$SNIPPET" "$ENGINE_CACHE" \
        "${CAMERAS[@]}" <<'PY'
import json, sys
from pathlib import Path
try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

config, site, device, broker, tls, state, snippet, engine_cache, *cameras = sys.argv[1:]
defaults = tomllib.loads(Path(snippet).read_text()) if snippet else {}
site = site or defaults.get("site", "")
device = device or defaults.get("device", "")
host, port = defaults.get("broker", {}).get("host", ""), defaults.get("broker", {}).get("port", 8883)
if broker:
    host, _, port = broker.rpartition(":")
    if not host or not port.isdigit():
        sys.exit(f"install-edge: error: --broker {broker!r}: expected HOST:PORT")
missing = [name for name, value in (("--site", site), ("--device", device), ("--broker", host)) if not value]
if not cameras:
    missing.append("--camera ID=URL")
if missing:
    sys.exit(f"install-edge: error: {config} does not exist yet and these are missing: {', '.join(missing)}")
q = json.dumps  # a JSON string is a valid TOML basic string
lines = [
    "# Written by install-edge.sh; edit freely (the installer keeps an existing file). Every setting is in",
    "# /opt/revisit/deploy/edge.example.toml; check a change with `revisit edge check-config --config THIS`.",
    f"site = {q(site)}",
    f"device = {q(device)}",
    f"state_dir = {q(state)}",
    "",
    "[broker]",
    f"host = {q(host)}",
    f"port = {int(port)}",
]
if tls:
    lines += ["", "[broker.tls]", f"ca = {q(tls + '/ca.pem')}", f"cert = {q(tls + '/device.pem')}",
              f"key = {q(tls + '/device.key')}"]
for cam in cameras:
    cam_id, sep, url = cam.partition("=")
    if not sep or not cam_id or not url:
        sys.exit(f"install-edge: error: --camera {cam!r}: expected ID=URL")
    lines += ["", "[[cameras]]", f"id = {q(cam_id)}", f"source = {q(url)}", "fps = 5"]
if engine_cache:  # a Jetson: TensorRT engines, prebuilt below, cached in the state directory
    lines += ["", "[engine.backend]", 'type = "tensorrt"', f"cache_dir = {q(engine_cache)}"]
Path(config).write_text("\n".join(lines) + "\n")
PY
    umask 022
    chmod 0640 "$CONFIG"  # camera passwords
    owner root:"$SERVICE_USER" "$CONFIG"
fi
"$REVISIT" edge check-config --config "$CONFIG" 2>&1 >/dev/null | sed 's/^/    /'

# -- state directory and TensorRT engines -----------------------------------------------------------------------
install -d -m 0750 "$STATE"
owner "$SERVICE_USER:$SERVICE_USER" "$STATE"
say "TensorRT engines"
ENGINE_FAIL="building the TensorRT engines failed (above); fix it and run this installer again, or build them
    by hand: $REVISIT deploy build-engines --config $CONFIG --models $MODELS"
if (( REAL )); then
    runuser -u "$SERVICE_USER" -- env REVISIT_MODELS="$MODELS" "$REVISIT" deploy build-engines --config "$CONFIG" \
        2>&1 | sed 's/^/    /' || die "$ENGINE_FAIL"
else
    "$REVISIT" deploy build-engines --config "$CONFIG" --models "$MODELS" 2>&1 | sed 's/^/    /' || die "$ENGINE_FAIL"
fi

"$REVISIT" edge doctor --config "$CONFIG" --models "$MODELS" --only models >/dev/null \
    || { "$REVISIT" edge doctor --config "$CONFIG" --models "$MODELS" --only models || true;
         die "the models (or engines) $CONFIG asks for are not installed and verified"; }

# -- systemd ----------------------------------------------------------------------------------------------------
if (( SYSTEMD )); then
    say "installing the systemd unit into $UNIT_DIR"
    install -D -m 0644 "$BUNDLE/systemd/revisit-edge.service" "$UNIT_DIR/revisit-edge.service"
    DROPIN="$UNIT_DIR/revisit-edge.service.d/10-install.conf"
    mkdir -p "$(dirname "$DROPIN")"
    {
        echo "# Written by install-edge.sh: this installation's paths (and a Jetson's devices)."
        echo "[Service]"
        echo "ExecStart="
        echo "ExecStart=$REVISIT edge run --config $CONFIG"
        echo "Environment=REVISIT_MODELS=$MODELS"
        if (( JETSON )); then
            echo "# The GPU and hardware decoders: /dev/nvhost-*, /dev/nvmap (group video)."
            echo "PrivateDevices=no"
            echo "SupplementaryGroups=video"
        fi
    } > "$DROPIN.tmp"
    mv "$DROPIN.tmp" "$DROPIN"
    if (( REAL )) && [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null; then
        systemctl daemon-reload
        systemctl enable revisit-edge.service
        systemctl restart revisit-edge.service
        note "revisit-edge enabled and (re)started: journalctl -u revisit-edge -f"
    else
        note "systemctl skipped ($([[ -n "$PREFIX" ]] && echo "--prefix" || echo "systemd is not running here"))"
    fi
else
    say "systemd unit skipped (--no-systemd): run $REVISIT edge run --config $CONFIG yourself"
fi

# -- check ------------------------------------------------------------------------------------------------------
if (( DOCTOR )); then
    say "revisit edge doctor"
    if ! "$REVISIT" edge doctor --config "$CONFIG" --models "$MODELS" | sed 's/^/    /'; then
        warn "some checks failed (see the fixes above); the service keeps retrying. Check again with:"
        warn "  $REVISIT edge doctor --config $CONFIG"
    fi
fi
say "done: Revisit edge $("$REVISIT" --version | cut -d' ' -f2) in $OPT, configuration $CONFIG"
