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
  --python PATH        Python 3.11 for the virtual environment (default: python3.11, else python3)
  --deps-from DIR      tests/development only: reuse the packages in DIR (a site-packages folder) instead of
                       the bundle's dependencies (for bundles made with `revisit deploy bundle --no-deps`)
  -h, --help           this help

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
JETSON=0
[[ -f "$JETSON_RELEASE" ]] && JETSON=1

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

# -- Python -----------------------------------------------------------------------------------------------------
if [[ -z "$PYTHON" ]]; then
    PYTHON="$(command -v python3.11 || command -v python3 || true)"
    [[ -n "$PYTHON" ]] || die "no python3 found: install Python 3.11 (Debian/Ubuntu: apt install python3.11 python3.11-venv)"
fi
"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)' \
    || die "$PYTHON is Python $("$PYTHON" -c 'import platform; print(platform.python_version())'); Revisit needs 3.11 (give --python PATH)"
"$PYTHON" -c 'import ensurepip, venv' 2>/dev/null \
    || die "$PYTHON cannot create virtual environments: apt install python3.11-venv"

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
if [[ -x "$VENV/bin/python" ]]; then
    say "virtual environment $VENV exists"
else
    say "creating virtual environment $VENV"
    mkdir -p "$OPT"
    "$PYTHON" -m venv "$VENV"
fi
if [[ -n "$DEPS_FROM" ]]; then
    [[ -d "$DEPS_FROM" ]] || die "--deps-from $DEPS_FROM is not a directory"
    say "installing $(basename "$WHEEL") (dependencies from $DEPS_FROM: tests/development only)"
    SITE_PACKAGES="$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    printf '%s\n' "$DEPS_FROM" > "$SITE_PACKAGES/revisit-deps.pth"
    "${PIP[@]}" install --no-index --no-deps --force-reinstall "$WHEEL"
else
    say "installing $(basename "$WHEEL") and its dependencies from the bundle (offline)"
    "${PIP[@]}" install --no-index --find-links "$BUNDLE/wheelhouse" "$WHEEL" \
        || die "offline install failed: was the bundle built for this machine's platform and Python? (see README)"
    "${PIP[@]}" install --no-index --no-deps --force-reinstall "$WHEEL"
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
import json, sys, tomllib
from pathlib import Path

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
(( JETSON )) && say "Jetson detected ($JETSON_RELEASE)"
say "TensorRT engines"
if (( REAL )); then
    runuser -u "$SERVICE_USER" -- env REVISIT_MODELS="$MODELS" "$REVISIT" deploy build-engines --config "$CONFIG" \
        | sed 's/^/    /'
else
    "$REVISIT" deploy build-engines --config "$CONFIG" --models "$MODELS" | sed 's/^/    /'
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
