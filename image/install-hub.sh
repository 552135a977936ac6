#!/bin/sh
# image/install-hub.sh ROOT: put the hub into a Debian 12 root tree. Run as root on the build
# host. mkosi runs it as its finalize step (mkosi.finalize, with ROOT=$BUILDROOT), and
# tests/test_image.py proves this same script on a tree that mkosi built.
#
# 1. The hub's source as the working tree has it (tracked and untracked files, not ignored
#    ones), copied out so that the build leaves nothing in the repository.
# 2. A wheelhouse on the build host: the hub's wheel and every dependency from PyPI (pip's own
#    cache makes the next build fast). The image itself never reaches the network.
# 3. The systemd units, sysusers.d, tmpfiles.d (systemd/), the appliance's own files
#    (image/rootfs/: partitions, mounts, first boot, network), docs, device profiles.
# 4. /opt/store-edge: a venv of the image's own python3 (made inside ROOT with chroot, so its
#    paths are the image's), the hub installed from the wheelhouse with --no-index.
# 5. The edge user (systemd-sysusers), its directories (systemd-tmpfiles), the units enabled;
#    Debian's mosquitto.service disabled (the hub starts its own broker: managed mode).
#
# Environment: EDGE_IMAGE_PYTHON, the build host's Python 3.11 with pip (default: the
# repository's .venv); it must match the image's Python (Debian 12: 3.11) for binary wheels.
set -eu

ROOT=${1:?usage: install-hub.sh ROOT}
HERE=$(cd "$(dirname "$(readlink -f "$0")")" && pwd)
REPO=$(dirname "$HERE")
PYTHON=${EDGE_IMAGE_PYTHON:-$REPO/.venv/bin/python}
WORK=$(mktemp -d "${TMPDIR:-/var/tmp}/store-edge-image.XXXXXX")
trap 'rm -rf "$WORK" "$ROOT/var/tmp/store-edge-wheels"' EXIT

step() { echo "install-hub: $*"; }
# Commands inside ROOT get a clean environment: nothing of the build host's (PIP_*, VIRTUAL_ENV).
in_root() { chroot "$ROOT" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }

[ -x "$ROOT/usr/bin/python3" ] || { echo "install-hub: $ROOT has no /usr/bin/python3" >&2; exit 1; }
image_py=$(in_root /usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
host_py=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
if [ "$image_py" != "$host_py" ]; then
    echo "install-hub: $PYTHON is Python $host_py, the image has $image_py: wheels would not fit" >&2
    exit 1
fi

step "1. source from $REPO"
mkdir -p "$WORK/src"
git -C "$REPO" ls-files -z --cached --others --exclude-standard -- pyproject.toml README.md edge devices |
    tar -C "$REPO" --null --files-from=- --ignore-failed-read -cf - |
    tar -C "$WORK/src" -xf -
version=$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)

step "2. wheelhouse (PyPI, through pip's cache)"
"$PYTHON" -m pip wheel --quiet --disable-pip-version-check --wheel-dir "$WORK/wheels" "$WORK/src"

step "3. units and appliance files"
install -D -m 0644 "$REPO/systemd/edge-hub.service" "$ROOT/usr/lib/systemd/system/edge-hub.service"
install -D -m 0644 "$REPO/systemd/sysusers.d/edge.conf" "$ROOT/usr/lib/sysusers.d/edge.conf"
install -D -m 0644 "$REPO/systemd/tmpfiles.d/edge.conf" "$ROOT/usr/lib/tmpfiles.d/edge.conf"
# External broker mode only (docs/operations.md): shipped, not active.
install -D -m 0644 "$REPO/systemd/mosquitto.service.d/edge.conf" \
    "$ROOT/usr/share/store-edge/mosquitto.service.d/edge.conf"
cp -R --no-preserve=ownership "$HERE/rootfs/." "$ROOT/"
install -D -m 0644 "$REPO/docs/operations.md" "$ROOT/usr/share/doc/store-edge/operations.md"
install -D -m 0644 "$HERE/README.md" "$ROOT/usr/share/doc/store-edge/image.md"
if [ -d "$REPO/firmware_profiles" ]; then
    rm -rf "$ROOT/usr/share/store-edge/firmware_profiles"
    cp -R --no-preserve=ownership "$REPO/firmware_profiles" "$ROOT/usr/share/store-edge/"
fi
echo "$version" >"$ROOT/usr/share/store-edge/source-version"

step "4. /opt/store-edge (hub $version)"
rm -rf "$ROOT/opt/store-edge"
in_root /usr/bin/python3 -m venv /opt/store-edge
mkdir -p "$ROOT/var/tmp/store-edge-wheels"
cp "$WORK"/wheels/*.whl "$ROOT/var/tmp/store-edge-wheels/"
in_root /opt/store-edge/bin/pip install --quiet --disable-pip-version-check \
    --no-cache-dir --no-index --find-links /var/tmp/store-edge-wheels store-edge
in_root /opt/store-edge/bin/edge --help >/dev/null

step "5. user, directories, units"
systemd-sysusers --root="$ROOT"
systemd-tmpfiles --root="$ROOT" --create edge.conf
systemctl --root="$ROOT" enable edge-hub.service edge-firstboot.service edge-firstboot.path \
    var.mount etc-edge.mount var-lib-edge.mount systemd-networkd.service
systemctl --root="$ROOT" disable mosquitto.service
step "done"
