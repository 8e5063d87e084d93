#!/usr/bin/env bash
# After `vagrant up`: make a user on the app machine, submit a `sum` job through nginx on
# http://127.0.0.1:$LAB_HTTP_PORT, wait for `succeeded`, then print the URL and a ready token.
set -euo pipefail

LAB_HTTP_PORT="${LAB_HTTP_PORT:-8080}"
LAB_USER="${LAB_USER:-lab}"
base="http://127.0.0.1:$LAB_HTTP_PORT"

SAY_PREFIX="lab:"
# shellcheck source=provision/lib/say.sh
source "$(dirname "${BASH_SOURCE[0]}")/../lib/say.sh"

token="$("$(dirname "$0")/lab-user.sh" "$LAB_USER" | tail -n1)"
[[ "$token" == jl_* ]] || die "could not create a token for user $LAB_USER on the app machine"

say "smoke check: a sum job through $base"
reply="$(curl -sS --max-time 20 -X POST "$base/v1/jobs" -H "Authorization: Bearer $token" \
    -H 'Content-Type: application/json' -d '{"type": "sum", "args": {"numbers": [1, 2, 3]}}')" \
    || die "POST $base/v1/jobs failed"
job="$(printf '%s' "$reply" | python3 -c 'import json,sys; print(json.load(sys.stdin).get("id", ""))' 2>/dev/null || true)"
[[ -n "$job" ]] || die "job not accepted: $reply"

status=""
for _ in $(seq 1 150); do
    status="$(curl -sS --max-time 5 "$base/v1/jobs/$job" -H "Authorization: Bearer $token" \
        | python3 -c 'import json,sys; print(json.load(sys.stdin).get("status", ""))' 2>/dev/null || true)"
    [[ "$status" == succeeded || "$status" == failed ]] && break
    sleep 0.2
done
[[ "$status" == succeeded ]] || die "job $job ended '$status' (wanted succeeded); see: .venv/bin/fab logs --lines=100"
result="$(curl -sS --max-time 5 "$base/v1/jobs/$job/result" -H "Authorization: Bearer $token")"
say "job $job succeeded: $result"
say "ready: $base  (user $LAB_USER; token on the next line)"
echo "$token"
