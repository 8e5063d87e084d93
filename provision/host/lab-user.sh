#!/usr/bin/env bash
# Print a new API token for user NAME of the lab's app (creating the user if needed); the token
# is alone on the last line. Usage: provision/host/lab-user.sh NAME
set -euo pipefail

name="${1:-}"
[[ -n "$name" ]] || { echo "usage: make lab-user NAME=<user>" >&2; exit 2; }
[[ "$name" =~ ^[A-Za-z0-9._@-]{1,64}$ ]] || { echo "lab: user name '$name' must be 1-64 of A-Z a-z 0-9 . _ @ -" >&2; exit 2; }
cd "$(dirname "$0")/../.."
export HOST_TOOL=lab
# shellcheck source=provision/host/lib.sh
source provision/host/lib.sh
app_user="$(lab_setting LAB_APP_USER)"
# The app machine (in the cluster: the first app node; they share one database).
app="$(lab_query role app)"
app="${app%%$'\n'*}"
out="$(vagrant ssh "$app" -c "sudo -u '$app_user' /usr/local/bin/joblab-exec flask --app app users create '$name'" 2>/dev/null | tr -d '\r')" \
    || { echo "lab: could not reach the app machine (is the lab up? make lab)" >&2; exit 1; }
printf '%s\n' "$out" | tail -n1
