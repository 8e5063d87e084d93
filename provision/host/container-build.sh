#!/usr/bin/env bash
# `make container`: the all-in-one image of dockerfile/Dockerfile, built with no network. First
# the host steps it needs, each a no-op when done: the Docker engine, the base image (and Vagrant,
# whose public key the base image's fresh build takes), the packages the build installs
# (container-deps.sh). Env: CONTAINER_IMAGE (default nginx_gunicorn_flask, the seed's name),
# JOBLAB_DB (sqlite | postgresql), LAB_IMAGE (the base image, lab.yml's by default).
set -euo pipefail

export HOST_TOOL=container
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=provision/host/lib.sh
source "$HERE/lib.sh"
REPO_ROOT="$(cd "$HERE/../.." && pwd)"
CONTAINER_IMAGE="${CONTAINER_IMAGE:-nginx_gunicorn_flask}"
JOBLAB_DB="${JOBLAB_DB:-sqlite}"
PY="${PY:-$REPO_ROOT/.venv/bin/python}"
use_sudo_unless_root "docker"

[[ "$JOBLAB_DB" == sqlite || "$JOBLAB_DB" == postgresql ]] || die "JOBLAB_DB must be sqlite or postgresql (got '$JOBLAB_DB')"
# The build context is the repository; the Dockerfile copies .cache/artifacts from it.
cache="$(realpath -m "${ARTIFACT_CACHE:-$REPO_ROOT/.cache/artifacts}")"
[[ "$cache" == "$(realpath -m "$REPO_ROOT/.cache/artifacts")" ]] \
    || die "ARTIFACT_CACHE=$cache: the image's build context needs the cache at .cache/artifacts in the repository"

"$HERE/docker-engine.sh"
"$HERE/vagrant.sh" >/dev/null
base="$("$PY" -c 'from fablib import labfile; print(labfile.setting("LAB_IMAGE", labfile.load()["profiles"]["debian12"]["image"]))')"
LAB_IMAGE="$base" "$HERE/base-image.sh"
"$HERE/container-deps.sh"
echo "container: docker build --network none -t $CONTAINER_IMAGE (JOBLAB_DB=$JOBLAB_DB, from $base)"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
if ! "${as_root[@]}" docker build --network none --pull=false --build-arg "BASE_IMAGE=$base" \
    --build-arg "JOBLAB_DB=$JOBLAB_DB" -t "$CONTAINER_IMAGE" -f "$REPO_ROOT/dockerfile/Dockerfile" "$REPO_ROOT" >"$log" 2>&1; then
    tail -n 20 "$log" >&2
    die "docker build failed (last lines above)"
fi
echo "container: built $CONTAINER_IMAGE; run it: docker run -d --name joblab -p 127.0.0.1:8081:80 $CONTAINER_IMAGE"
