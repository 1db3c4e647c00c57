#!/usr/bin/env bash
# Nightly improvement loop, for cron. Example crontab line (02:30 every night):
#   30 2 * * * COUNCIL_HOME=/srv/council /path/to/council/cron/nightly_improvement.sh
# Exit codes: 0 done (or nothing to do), 1 a stage failed (already alerted), 4 another run holds the lock.
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
council="${COUNCIL_BIN:-$repo/.venv/bin/council}"
home="${COUNCIL_HOME:-$HOME/.council}"
mkdir -p "$home/logs"
"$council" nightly "$@" >>"$home/logs/nightly.out" 2>&1
code=$?
if [ "$code" -ne 0 ] && [ "$code" -ne 4 ]; then
  echo "council nightly failed with exit code $code; see $home/logs/nightly.out" >&2
fi
exit "$code"
