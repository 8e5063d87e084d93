#!/usr/bin/env bash
# Java 17+ runtime for the Kafka broker (sidecar). No-op when `java` on PATH is already 17 or newer.
#   Debian/Ubuntu: openjdk-17-jre-headless       RHEL 8/9: java-17-openjdk-headless
# RHEL 6/7 have no Java 17 package: install one by hand (JAVA_HOME for the init script) or refuse.
set -euo pipefail

# Pinned: Kafka 3.9 runs on 11+, but the broker on 11 is deprecated; 4.x needs 17 (RHEL-FACTS §7).
JAVA_MIN_MAJOR=17
DEBIAN_PACKAGE="openjdk-17-jre-headless"
RHEL_PACKAGE="java-17-openjdk-headless"

# shellcheck source=provision/lib/common.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib/common.sh"

# Major version of a java binary: "17.0.x" -> 17, old style "1.8.0_x" -> 8; empty if it does not run.
java_major() {
    local version
    version="$("$1" -version 2>&1 | sed -n 's/.* version "\([0-9][0-9._]*\).*/\1/p' | head -n1)" || true
    [[ "$version" == 1.* ]] && version="${version#1.}"
    echo "${version%%[._]*}"
}

has_java_min() {
    local java major
    java="$(command -v java)" || return 1
    major="$(java_major "$java")"
    [[ -n "$major" ]] && ((major >= JAVA_MIN_MAJOR))
}

# RHEL keeps older JDKs selected when they were chosen by hand; point `java` at 17 then.
select_rhel_java17() {
    local candidate
    for candidate in /usr/lib/jvm/java-17-openjdk*/bin/java /usr/lib/jvm/jre-17*/bin/java; do
        if [[ -x "$candidate" ]]; then
            alternatives --set java "$candidate"
            say "selected $candidate as java (alternatives)"
            return 0
        fi
    done
    return 1
}

main() {
    require_root
    detect_os
    if has_java_min; then
        return 0
    fi
    if [[ "$OS_FAMILY" == debian ]]; then
        pkg_install "$DEBIAN_PACKAGE"
    else
        ((OS_MAJOR >= 8)) || die "RHEL $OS_MAJOR has no Java $JAVA_MIN_MAJOR package; the sidecar needs RHEL 8/9 (or install a JDK and put it on PATH)"
        pkg_install "$RHEL_PACKAGE"
        has_java_min || select_rhel_java17 || true
    fi
    has_java_min || die "java on PATH is still older than $JAVA_MIN_MAJOR: $(java -version 2>&1 | head -n1)"
    say "java: $(java -version 2>&1 | head -n1)"
}

main "$@"
