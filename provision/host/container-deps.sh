#!/usr/bin/env bash
# What the all-in-one image's build needs besides the base image, in the artifact cache, so that
# `docker build` runs with no network at all:
#   .cache/artifacts/container/lab-settings.env   lab.yml's `settings`, as KEY=value lines
#   .cache/artifacts/container/deps/debs/          every .deb the provision scripts install (+ Packages)
#   .cache/artifacts/container/deps/wheels/        every Python wheel they install (but the app's own)
# The packages are collected by running the provision scripts themselves once, with network, in a
# throwaway container of the base image (dockerfile/container.sh collect): the list of what to
# install is never written twice. Done again only when the scripts, the settings or the base image
# changed (a fingerprint in .complete); otherwise prints "present" and changes nothing.
# Needs: the base image (provision/host/base-image.sh), the Kafka jars and the app wheel.
set -euo pipefail

export HOST_TOOL=container-deps
# shellcheck source=provision/host/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
ARTIFACT_CACHE="${ARTIFACT_CACHE:-$REPO_ROOT/.cache/artifacts}"
OUT="$ARTIFACT_CACHE/container"
PY="${PY:-$REPO_ROOT/.venv/bin/python}"
use_sudo_unless_root "docker"

image="$("$PY" -c 'from fablib import labfile; print(labfile.setting("LAB_IMAGE", labfile.load()["profiles"]["debian12"]["image"]))')" \
    || die "cannot read lab.yml (run make venv first)"
image_id="$("${as_root[@]}" docker image inspect -f '{{.Id}}' "$image" 2>/dev/null)" \
    || die "no base image $image (make lab builds it: provision/host/base-image.sh)"

settings="$(cd "$REPO_ROOT" && "$PY" -c '
from fablib import labfile
for name, value in labfile.load()["settings"].items():
    print("%s=%s" % (name, value))')" || die "cannot read lab.yml's settings"

fingerprint="$( {
    echo "$image_id"
    echo "$settings"
    cd "$REPO_ROOT" && find provision/*.sh provision/lib dockerfile/container.sh -type f -print0 | LC_ALL=C sort -z \
        | xargs -0 sha256sum
} | sha256sum | cut -d' ' -f1)"
if [[ "$(cat "$OUT/.complete" 2>/dev/null)" == "$fingerprint" ]]; then
    echo "container-deps: present"
    exit 0
fi

# Collected into a fresh directory, swapped in only when complete.
mkdir -p "$ARTIFACT_CACHE"
staging="$(mktemp -d "$ARTIFACT_CACHE/.container.XXXXXX")"
trap 'rm -rf -- "$staging"' EXIT
printf '%s\n' "$settings" >"$staging/lab-settings.env"
mkdir -p "$staging/deps"
echo "container-deps: provisioning a throwaway container of $image to collect packages (a few minutes)"
"${as_root[@]}" docker run --rm --pull never \
    -v "$REPO_ROOT:/opt/joblab-lab:ro" -v "$ARTIFACT_CACHE:/artifacts:ro" -v "$staging:/stage" \
    -e LAB_ARTIFACTS=/artifacts -e LAB_SETTINGS_FILE=/stage/lab-settings.env -e COLLECT_INTO=/stage/deps \
    "$image" bash /opt/joblab-lab/dockerfile/container.sh collect >"$staging/collect.log" 2>&1 \
    || die "collecting packages failed; last lines: $(tail -n 5 "$staging/collect.log" | tr '\n' ' ')"
"${as_root[@]}" chown -R "$(id -u):$(id -g)" "$staging/deps"
echo "$fingerprint" >"$staging/.complete"
rm -rf -- "$OUT"
mv -T -- "$staging" "$OUT"
trap - EXIT
echo "container-deps: $(find "$OUT/deps/debs" -name '*.deb' | wc -l) packages, $(find "$OUT/deps/wheels" -type f | wc -l) wheels in $OUT"
