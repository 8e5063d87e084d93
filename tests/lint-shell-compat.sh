#!/usr/bin/env bash
# `make lint`: shell constructs whose meaning depends on the bash version. The scripts run on
# CentOS 6 (bash 4.1) as well as on Debian 12 (bash 5.2); shellcheck accepts both readings.
#   ${var//pat/"$repl"} (or /pat/"..."): bash <= 4.2 keeps the quotes in the result (a template
#   rendered numprocs="1", and supervisord refused it); bash >= 5.2 expands & when unquoted.
#   Use replace_all from provision/lib/common.sh instead.
# Usage: tests/lint-shell-compat.sh FILE...; prints each offending line, exits 1 if any.
set -euo pipefail

found=0
for file in "$@"; do
    # Comment lines are skipped: they may show the construct to say why it is not used.
    if grep -nE '^[^#]*\$\{[A-Za-z_][A-Za-z0-9_]*//?[^}]*/"' "$file" | sed "s|^|$file:|"; then
        found=1
    fi
done
if [[ $found -ne 0 ]]; then
    echo "lint: quoted replacement in \${var//pattern/\"...\"}: bash <= 4.2 (CentOS 6) keeps the quotes;" \
         "use replace_all (provision/lib/common.sh)" >&2
    exit 1
fi
