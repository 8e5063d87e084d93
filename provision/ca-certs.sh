#!/usr/bin/env bash
# Trust the extra CA certificates the host trusts (corporate TLS proxies and the like), so pip
# and curl on the machine see what the host sees. `make lab` copies the host's local CAs
# (/usr/local/share/ca-certificates/*.crt) to $LAB_ARTIFACTS/ca-certificates/; none is normal.
set -euo pipefail
# shellcheck source=provision/lib/common.sh
source "$(dirname "$0")/lib/common.sh"
require_root
detect_os

src="$LAB_ARTIFACTS/ca-certificates"
compgen -G "$src/*.crt" >/dev/null || exit 0

if [[ "$OS_FAMILY" == debian ]]; then
    pkg_install ca-certificates
    dest=/usr/local/share/ca-certificates/joblab
    refresh=(update-ca-certificates)
else
    dest=/etc/pki/ca-trust/source/anchors
    refresh=(update-ca-trust extract)
fi
ensure_dir "$dest" 755 root:root
changed=0
for crt in "$src"/*.crt; do
    install_file "$crt" "$dest/$(basename "$crt")" 644 root:root && changed=1
done
if [[ $changed -eq 1 ]]; then
    "${refresh[@]}" >/dev/null
    say "trust store refreshed"
fi
