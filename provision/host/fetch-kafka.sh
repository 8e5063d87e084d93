#!/usr/bin/env bash
# Fill the local artifact cache with a pinned Apache Kafka broker classpath.
#
# Result: $ARTIFACT_CACHE/kafka-$KAFKA_VERSION/libs/*.jar and a .complete marker.
# The directory only ever appears complete (it is built in a temp dir and
# renamed into place), so an interrupted run is simply redone next time and a
# complete cache makes this script a quick no-op.
#
# Sources:
#   default          mvn resolves the broker jars from the Maven repository
#                    configured for mvn (devops/kafka/pom.xml), because the
#                    Apache download site is not reachable from the lab.
#   KAFKA_TARBALL    path to an official kafka_<scala>-<version>.tgz; only its
#                    libs/ directory is used (for people who can download it).
#
# Every download is checked: mvn runs with --strict-checksums, so a jar (or pom, or plugin) whose
# .sha1/.md5 from the repository does not match fails the fetch instead of drawing Maven's default
# warning (checksumPolicy "warn"); nothing reaches the cache or the broker's classpath.
#
# Versions: lab.yml's LAB_KAFKA_VERSION and LAB_KAFKA_SCALA (the environment overrides them, as
# everywhere: fablib/labfile.py resolves).
# Env: ARTIFACT_CACHE, KAFKA_TARBALL,
#      KAFKA_MVN_SETTINGS (a Maven settings.xml for mvn -s, e.g. a mirror; default: mvn's own).
set -euo pipefail

SCRIPT_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO_ROOT="$(cd "$SCRIPT_DIR/../.." && pwd)"
export HOST_TOOL=fetch-kafka
# shellcheck source=provision/host/lib.sh
source "$SCRIPT_DIR/lib.sh"
KAFKA_VERSION="$(lab_setting LAB_KAFKA_VERSION)"
SCALA_VERSION="$(lab_setting LAB_KAFKA_SCALA)"
ARTIFACT_CACHE="${ARTIFACT_CACHE:-$REPO_ROOT/.cache/artifacts}"
KAFKA_POM="$REPO_ROOT/devops/kafka/pom.xml"
KAFKA_HOME_DIR="$ARTIFACT_CACHE/kafka-$KAFKA_VERSION"
COMPLETE_MARKER="$KAFKA_HOME_DIR/.complete"
# The broker jar; its presence proves we got the version we asked for.
BROKER_JAR="kafka_${SCALA_VERSION}-${KAFKA_VERSION}.jar"

STAGING_DIR=""
MVN_PID=""


# Runs on every exit: whatever was half-built in the staging dir is dropped,
# so a failed or interrupted run never leaves a partial cache behind.
remove_staging_dir() {
    # mvn runs in the background (see fetch_jars_with_mvn); stop it first so
    # it does not keep writing into the dir we are about to delete.
    if [[ -n "$MVN_PID" ]]; then
        kill -TERM "$MVN_PID" 2>/dev/null || true
        wait "$MVN_PID" 2>/dev/null || true
    fi
    if [[ -n "$STAGING_DIR" && -d "$STAGING_DIR" ]]; then
        rm -rf -- "$STAGING_DIR"
    fi
}

is_cached() {
    [[ -f "$COMPLETE_MARKER" ]]
}

# Tests may start several brokers at once, and each may call this script:
# serialise on a lock file so only one of them downloads, the others wait
# and then find the cache complete. flock is optional (util-linux); without
# it the atomic rename below still keeps the cache consistent.
HAVE_LOCK=false
take_cache_lock() {
    if command -v flock >/dev/null 2>&1; then
        exec 9>"$ARTIFACT_CACHE/.kafka-$KAFKA_VERSION.lock"
        flock 9
        HAVE_LOCK=true
    fi
}

# A run killed with SIGKILL cannot clean up after itself. Holding the lock
# means no other run is in progress, so any staging dir left is garbage.
remove_stale_partials() {
    if [[ "$HAVE_LOCK" == true ]]; then
        find "$ARTIFACT_CACHE" -mindepth 1 -maxdepth 1 -type d \
            -name ".kafka-$KAFKA_VERSION.partial.*" -exec rm -rf -- {} +
    fi
}

fetch_jars_with_mvn() {
    local libs_dir="$1" mvn_log="$STAGING_DIR/mvn.log" reason settings=()
    command -v mvn >/dev/null 2>&1 \
        || die "mvn not found: install Maven, or set KAFKA_TARBALL=/path/kafka_${SCALA_VERSION}-${KAFKA_VERSION}.tgz"
    [[ -f "$KAFKA_POM" ]] || die "missing $KAFKA_POM"
    if [[ -n "${KAFKA_MVN_SETTINGS:-}" ]]; then
        [[ -r "$KAFKA_MVN_SETTINGS" ]] || die "KAFKA_MVN_SETTINGS=$KAFKA_MVN_SETTINGS is not readable"
        settings=(-s "$KAFKA_MVN_SETTINGS")
    fi
    echo "fetching Kafka $KAFKA_VERSION jars with mvn (first time: ~1-2 min)"
    # -DincludeScope=runtime = compile + runtime scopes: exactly what the
    # broker needs on its classpath, no test or provided jars.
    # In the background + wait: bash only runs the INT/TERM traps once the
    # foreground command ends, so a foreground mvn would delay a kill until
    # the whole download is done.
    # --strict-checksums (-C): see the header; it overrides every repository's checksumPolicy.
    mvn -B --no-transfer-progress --strict-checksums "${settings[@]}" -f "$KAFKA_POM" \
        -Dkafka.version="$KAFKA_VERSION" \
        -Dscala.binary.version="$SCALA_VERSION" \
        dependency:copy-dependencies \
        -DincludeScope=runtime \
        -DoutputDirectory="$libs_dir" >"$mvn_log" 2>&1 &
    MVN_PID=$!
    if wait "$MVN_PID"; then
        MVN_PID=""
    else
        MVN_PID=""
        # mvn's log goes away with the staging dir; keep its first error line.
        reason="$(grep -m1 '^\[ERROR\]' "$mvn_log" || tail -n1 "$mvn_log")"
        die "mvn could not resolve Kafka $KAFKA_VERSION: ${reason:-no output}"
    fi
}

extract_jars_from_tarball() {
    local libs_dir="$1" unpack_dir="$STAGING_DIR/unpack" found_libs
    [[ -f "$KAFKA_TARBALL" && -r "$KAFKA_TARBALL" ]] || die "KAFKA_TARBALL=$KAFKA_TARBALL is not a readable file"
    echo "extracting Kafka jars from $KAFKA_TARBALL"
    mkdir -p "$unpack_dir"
    # Only libs/ is needed: our own config templates replace config/, and
    # bin/ is replaced by provision/host/kafka-local.sh.
    tar -xzf "$KAFKA_TARBALL" -C "$unpack_dir" --wildcards '*/libs/*' 2>/dev/null \
        || die "could not extract libs/ from $KAFKA_TARBALL (not a Kafka release .tgz?)"
    found_libs="$(find "$unpack_dir" -mindepth 2 -maxdepth 2 -type d -name libs | head -n1)"
    [[ -n "$found_libs" ]] || die "no <top>/libs/ directory in $KAFKA_TARBALL"
    mv -- "$found_libs" "$libs_dir"
    rm -rf -- "$unpack_dir"
}

check_broker_jar_present() {
    local libs_dir="$1" found
    if [[ ! -f "$libs_dir/$BROKER_JAR" ]]; then
        found="$(find "$libs_dir" -maxdepth 1 -name 'kafka_*.jar' -printf '%f ' 2>/dev/null)" || true
        found="${found% }"
        die "expected $BROKER_JAR but got: ${found:-no kafka_*.jar} (KAFKA_VERSION/SCALA_VERSION mismatch?)"
    fi
}

write_complete_marker() {
    local dir="$1" source="$2"
    {
        echo "kafka_version=$KAFKA_VERSION"
        echo "scala_version=$SCALA_VERSION"
        echo "source=$source"
        echo "fetched_at=$(date -u +%Y-%m-%dT%H:%M:%SZ)"
    } >"$dir/.complete"
}

# The rename is the commit point: before it nothing is in place, after it
# everything (marker included) is.
move_into_place() {
    # A leftover without marker is from an older, broken run: replace it.
    if [[ -e "$KAFKA_HOME_DIR" ]]; then
        rm -rf -- "$KAFKA_HOME_DIR"
    fi
    # -T: never move the staging dir *into* an existing directory.
    mv -T -- "$STAGING_DIR" "$KAFKA_HOME_DIR" \
        || die "could not move the fetched jars into $KAFKA_HOME_DIR"
    STAGING_DIR=""
MVN_PID=""
}

print_summary() {
    local count size
    count="$(find "$KAFKA_HOME_DIR/libs" -maxdepth 1 -name '*.jar' | wc -l)"
    size="$(du -sh "$KAFKA_HOME_DIR/libs" | cut -f1)"
    echo "Kafka $KAFKA_VERSION ready in $KAFKA_HOME_DIR ($count jars, $size)"
}

main() {
    if is_cached; then
        echo "Kafka $KAFKA_VERSION already cached in $KAFKA_HOME_DIR"
        return 0
    fi
    mkdir -p "$ARTIFACT_CACHE" || die "cannot create $ARTIFACT_CACHE"
    take_cache_lock
    # Another process may have finished the fetch while we waited for the lock.
    if is_cached; then
        echo "Kafka $KAFKA_VERSION already cached in $KAFKA_HOME_DIR"
        return 0
    fi

    remove_stale_partials
    trap remove_staging_dir EXIT
    # Turn signals into a normal exit so the EXIT trap cleans up on Ctrl-C/kill too.
    trap 'exit 130' INT
    trap 'exit 143' TERM
    # Staging lives next to the final dir so the final mv is a same-filesystem rename.
    STAGING_DIR="$(mktemp -d "$ARTIFACT_CACHE/.kafka-$KAFKA_VERSION.partial.XXXXXX")"
    local libs_dir="$STAGING_DIR/libs" source
    if [[ -n "${KAFKA_TARBALL:-}" ]]; then
        extract_jars_from_tarball "$libs_dir"
        source="tarball:$KAFKA_TARBALL"
    else
        fetch_jars_with_mvn "$libs_dir"
        rm -f -- "$STAGING_DIR/mvn.log"
        source="maven"
    fi
    check_broker_jar_present "$libs_dir"
    write_complete_marker "$STAGING_DIR" "$source"
    # mktemp made it 0700; the cache may be shared with other local users.
    chmod 755 "$STAGING_DIR"
    move_into_place
    print_summary
}

main "$@"
