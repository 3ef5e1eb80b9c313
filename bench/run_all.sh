#!/usr/bin/env bash
# Run every benchmark in bench/ (bench_*.py), one after the other, each writing bench/results/<name>.json.
#
#   bench/run_all.sh                 every benchmark with its defaults (tens of minutes on 2 loaded cores)
#   bench/run_all.sh --quick         small runs: --quick where a benchmark has it, 2,000 patients for the
#                                    foundation load; the others run as they are (they are short)
#   bench/run_all.sh --pg URL        also on PostgreSQL, for the benchmarks that take --pg
#                                    (e.g. postgresql://postgres@127.0.0.1:5432/postgres; each makes and drops
#                                    its own database)
#   bench/run_all.sh --only api,cds_hooks   a subset, by name (bench_<name>.py)
#
# Results overwrite the committed JSON files; `git diff bench/results` shows what changed.
# Exit status: 0 when every benchmark succeeded, 1 otherwise (the failed ones are listed).
set -u -o pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(dirname "$here")"
python="${PYTHON:-$root/.venv/bin/python}"
quick=0
pg=""
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --quick) quick=1 ;;
    --pg) pg="${2:?--pg needs a URL}"; shift ;;
    --only) only="${2:?--only needs names}"; shift ;;
    -h|--help) sed -n '2,12p' "$0"; exit 0 ;;
    *) echo "unknown option: $1" >&2; exit 2 ;;
  esac
  shift
done

cd "$root" || exit 2
# The CDS Hooks benchmark drives the server with wrk (Debian package) when it is there: install it if we can.
if ! command -v wrk >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" -eq 0 ]; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk) >/dev/null 2>&1 \
    || echo "wrk could not be installed: bench_cds_hooks.py falls back to its httpx clients" >&2
fi
failed=()
for script in "$here"/bench_*.py; do
  name="$(basename "$script" .py)"
  name="${name#bench_}"
  if [ -n "$only" ] && [[ ",$only," != *",$name,"* ]]; then
    continue
  fi
  args=()
  if [ "$quick" = 1 ]; then
    if grep -q -- '"--quick"' "$script"; then
      args+=(--quick)
    elif [ "$name" = foundation ]; then
      args+=(--patients 2000)
    fi
  fi
  if [ -n "$pg" ] && grep -q -- '"--pg"' "$script"; then
    args+=(--pg "$pg")
  fi
  echo "=== $name: $python bench/$(basename "$script") ${args[*]:-}  (load $(cut -d' ' -f1-3 /proc/loadavg))"
  start=$(date +%s)
  if "$python" "$script" "${args[@]}"; then
    echo "=== $name: done in $(( $(date +%s) - start )) s"
  else
    echo "=== $name: FAILED (exit $?)" >&2
    failed+=("$name")
  fi
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "failed: ${failed[*]}" >&2
  exit 1
fi
echo "all benchmarks done; results in bench/results/"
