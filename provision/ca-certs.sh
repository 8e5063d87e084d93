#!/usr/bin/env bash
# Trust the extra CA certificates the host trusts (corporate TLS proxies and the like), so pip,
# conda and curl on the machine see what the host sees. `make lab` copies the host's local CAs
# (/usr/local/share/ca-certificates/*.crt) to $LAB_ARTIFACTS/ca-certificates/; none is normal.
#   - the OS trust store: update-ca-certificates (Debian), update-ca-trust (RHEL; on EL6 only
#     after `update-ca-trust enable`, until then extract does nothing);
#   - pip and conda carry their own CA bundles (pip: certifi), blind to the OS store: /etc/pip.conf
#     and /etc/conda/.condarc point them at the OS bundle.
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
    bundle=/etc/ssl/certs/ca-certificates.crt
else
    pkg_install ca-certificates
    dest=/etc/pki/ca-trust/source/anchors
    refresh=(update-ca-trust extract)
    bundle=/etc/pki/tls/certs/ca-bundle.crt
    # EL6 ships the shared trust store disabled: anchors are ignored until it is enabled.
    if [[ "$OS_MAJOR" == 6 ]] && update-ca-trust check 2>/dev/null | grep -q DISABLED; then
        update-ca-trust enable
        say "shared system trust store enabled (EL6)"
        el6_enabled=1
    fi
fi
ensure_dir "$dest" 755 root:root
# Enabling the store (EL6) needs an extract too, even when the anchors were there already.
changed="${el6_enabled:-0}"
for crt in "$src"/*.crt; do
    install_file "$crt" "$dest/$(basename "$crt")" 644 root:root && changed=1
done
if [[ $changed -eq 1 ]]; then
    "${refresh[@]}" >/dev/null
    say "trust store refreshed"
fi

# pip and conda: the OS bundle, which now holds the extra CAs too.
tmp="$(mktemp)"
printf '[global]\n# provision/ca-certs.sh: the OS trust store, with the extra CAs of the lab host.\ncert = %s\n' \
    "$bundle" >"$tmp"
install_file "$tmp" /etc/pip.conf 644 root:root || true
printf '# provision/ca-certs.sh: the OS trust store, with the extra CAs of the lab host.\nssl_verify: %s\n' \
    "$bundle" >"$tmp"
install_file "$tmp" /etc/conda/.condarc 644 root:root || true
rm -f "$tmp"
