#!/usr/bin/env bash
# Where a scenario's time goes in Gatehouse: instruction counts (callgrind) or CPU samples (perf),
# with the same origin, configs and credentials as bench/run.sh. Not a benchmark: no nginx, no
# repeats. "Profile before optimising" (BENCHMARKS.md, "Where the time goes").
#
# Usage: bench/profile.sh callgrind SCENARIO [REQUESTS]   (default 2000)
#        bench/profile.sh perf SCENARIO [SECONDS]         (default 8)
#        bench/profile.sh pair SCENARIO [ROUNDS] [SECONDS] (default 10 rounds of 3 s)
# SCENARIO: h1-100b, hdr-100b, auth-100b, policy-100b, h1-obs-off, h1-obs-on (pair: auth-100b,
# policy-100b).
#
# callgrind: Gatehouse under valgrind, one keep-alive connection; 300 requests to warm up, the
#   counters zeroed, then REQUESTS requests counted. Prints instructions per request and the
#   functions with the most of their own; the output file stays (OUT_DIR) for
#   `callgrind_annotate --inclusive=yes` and for `bench/lib/cgself.py REQUESTS BASE NEW` (what
#   changed between two builds). Deterministic, so it shows changes of 1 % that the machine's
#   noise hides from wall-clock runs; it does not show cache misses, and valgrind's CPU has no
#   SHA extensions (SHA-256 costs ~10x its native price there).
# perf: Gatehouse under wrk (as bench/run.sh: -t1 -c32, proxy on CPU 0, load on CPU 1), sampled
#   at 4999 Hz with call graphs for SECONDS; prints the split by binary and the top symbols;
#   perf.data stays in OUT_DIR.
# pair: what a scenario's policies cost over plain proxying *in the same process*: one Gatehouse
#   with the scenario's config plus a plain API at /plain (no product, no policies), loaded in
#   turns — plain, policy, policy, plain, ... — for ROUNDS rounds of SECONDS each, every request
#   with the scenario's headers. Per round, the policy route's CPU per request ÷ the plain
#   route's (from /proc, user + system, and user alone). Both routes share the process, its
#   threads (the store's) and its warm caches, and the turns are seconds apart, so the machine's
#   slow phases hit both; this resolves a few per cent where separate runs (bench/run.sh's
#   auth-100b ÷ hdr-100b) scatter by ±15 %.
# Env: GATEHOUSE_BIN (default: the dist build, else release), OUT_DIR (default bench/results).
set -euo pipefail

BENCH_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
MODE=${1:-} SCENARIO=${2:-}
[[ $MODE == callgrind || $MODE == perf || $MODE == pair ]] && [[ -n $SCENARIO ]] || {
  sed -n '5,9p' "$0" >&2
  exit 2
}
PROXY_CPU=${PROXY_CPU:-0}
LOAD_CPU=${LOAD_CPU:-1}
OUT_DIR=${OUT_DIR:-$BENCH_DIR/results}
if [[ -z ${GATEHOUSE_BIN:-} ]]; then
  GATEHOUSE_BIN=${CARGO_TARGET_DIR:-$BENCH_DIR/../target}/dist/gatehouse
  [[ -x $GATEHOUSE_BIN ]] || GATEHOUSE_BIN=${CARGO_TARGET_DIR:-$BENCH_DIR/../target}/release/gatehouse
fi
# shellcheck source=SCRIPTDIR/lib/common.sh
source "$BENCH_DIR/lib/common.sh"
# shellcheck source=SCRIPTDIR/lib/proxies.sh
source "$BENCH_DIR/lib/proxies.sh"

case $SCENARIO in
  h1-100b) mode=plain ;;
  hdr-100b) mode=hdr ;;
  auth-100b) mode=auth ;;
  policy-100b) mode=policy ;;
  h1-obs-off) mode=obsoff ;;
  h1-obs-on) mode=obson ;;
  *) die "profile.sh knows h1-100b, hdr-100b, auth-100b, policy-100b, h1-obs-off, h1-obs-on" ;;
esac
tool=valgrind
[[ $MODE == perf ]] && tool=perf
[[ $MODE == pair ]] && tool=wrk
if [[ $MODE == pair && $mode != auth && $mode != policy ]]; then die "pair compares auth-100b or policy-100b with plain proxying"; fi
command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install $([[ $tool == perf ]] && echo linux-perf || echo valgrind))"
command -v nginx >/dev/null || die "nginx is not installed (the origin); bench/run.sh installs it"
[[ -x $GATEHOUSE_BIN ]] || die "no Gatehouse binary at $GATEHOUSE_BIN (cargo build --profile dist)"

WORK=$(mktemp -d /tmp/gatehouse-profile.XXXXXX)
trap 'stop_all || true; rm -rf "$WORK"' EXIT
mkdir -p "$OUT_DIR"
stamp=$(date +%Y%m%d-%H%M%S)
headers=()
if [[ $mode == hdr || $mode == auth || $mode == policy ]]; then
  make_policy_credentials
  headers=("Ocp-Apim-Subscription-Key: $BENCH_SUB_KEY" "Authorization: Bearer $BENCH_JWT")
fi
start_upstream
port=$(free_port)

if [[ $MODE == callgrind ]]; then
  n=${3:-2000}
  out=$OUT_DIR/callgrind-$SCENARIO-$stamp.out
  GATEHOUSE_WRAP=(valgrind --tool=callgrind --callgrind-out-file="$out")
  proxy_start_gatehouse "$mode" "$port"
  wait_port "$port" "$PROXY_PID" 120 || die "Gatehouse under valgrind did not listen (see $PROXY_DIR/gatehouse.log)"
  python3 "$BENCH_DIR/lib/keepalive_client.py" "$port" 300 /100b "${headers[@]}"
  callgrind_control -z "$PROXY_PID" >/dev/null 2>&1
  python3 "$BENCH_DIR/lib/keepalive_client.py" "$port" "$n" /100b "${headers[@]}"
  callgrind_control -d "$PROXY_PID" >/dev/null 2>&1
  sleep 1
  stop_pid "$PROXY_PID"
  # The dump after zeroing is the file with the highest part number.
  dump=$(ls -t "$out".* | head -1)
  log "$SCENARIO: $n requests on one keep-alive connection, $GATEHOUSE_BIN"
  python3 "$BENCH_DIR/lib/cgself.py" "$n" "$dump"
  log "callgrind output: $dump"
elif [[ $MODE == pair ]]; then
  rounds=${3:-10} secs=${4:-3}
  GATEHOUSE_EXTRA_APIS=$'  plain:\n    path: /plain\n    backend: origin'
  proxy_start_gatehouse "$mode" "$port"
  wait_port "$port" "$PROXY_PID" || die "Gatehouse did not listen (see $PROXY_DIR/gatehouse.log)"
  wrk_args=(-t1 -c32)
  for h in "${headers[@]}"; do wrk_args+=(-H "$h"); done
  declare -A path=([plain]=/plain/100b [policy]=/100b)
  for route in plain policy; do # warm-up, and both routes must answer 200
    code=$(curl -s -o /dev/null -w '%{http_code}' -H "${headers[0]}" -H "${headers[1]}" "http://127.0.0.1:$port${path[$route]}")
    [[ $code == 200 ]] || die "GET ${path[$route]} through Gatehouse returned $code"
    taskset -c "$LOAD_CPU" wrk "${wrk_args[@]}" -d2s "http://127.0.0.1:$port${path[$route]}" >/dev/null
  done
  hz=$(getconf CLK_TCK)
  # window ROUTE -> "total_us_per_req user_us_per_req" for one turn
  window() {
    local u0 s0 u1 s1 n
    read -r u0 s0 < <(cpu_ticks "$PROXY_PID")
    taskset -c "$LOAD_CPU" wrk "${wrk_args[@]}" -d"${secs}s" "http://127.0.0.1:$port${path[$1]}" >"$WORK/wrk.txt"
    read -r u1 s1 < <(cpu_ticks "$PROXY_PID")
    n=$(awk '/ requests in / {print $1}' "$WORK/wrk.txt")
    grep -q 'Non-2xx' "$WORK/wrk.txt" && die "non-2xx responses on ${path[$1]}: $(cat "$WORK/wrk.txt")"
    awk -v u=$((u1 - u0)) -v s=$((s1 - s0)) -v n="$n" -v hz="$hz" 'BEGIN { printf "%.3f %.3f\n", (u + s) * 1e6 / hz / n, u * 1e6 / hz / n }'
  }
  log "$SCENARIO vs plain proxying in one process: $rounds rounds of ${secs}s per route, $GATEHOUSE_BIN"
  printf '%-6s %12s %12s %12s %12s %8s %8s\n' round plain_us policy_us plain_user policy_user ratio user_ratio >"$WORK/rounds.txt"
  for ((r = 1; r <= rounds; r++)); do
    if ((r % 2)); then order=(plain policy); else order=(policy plain); fi
    for route in "${order[@]}"; do read -r "t_$route" "u_$route" < <(window "$route"); done
    # shellcheck disable=SC2154 # t_*/u_* are read just above
    awk -v r="$r" -v tp="$t_plain" -v tq="$t_policy" -v up="$u_plain" -v uq="$u_policy" \
      'BEGIN { printf "%-6d %12.2f %12.2f %12.2f %12.2f %8.3f %8.3f\n", r, tp, tq, up, uq, tq / tp, uq / up }' >>"$WORK/rounds.txt"
  done
  cat "$WORK/rounds.txt"
  awk 'NR > 1 { t[++n] = $6; u[n] = $7; dp[n] = $5 - $4 }
    function med(a, n,    i, j, x, b) {
      for (i = 1; i <= n; i++) b[i] = a[i]
      for (i = 2; i <= n; i++) { x = b[i]; for (j = i - 1; j >= 1 && b[j] > x; j--) b[j + 1] = b[j]; b[j + 1] = x }
      return (n % 2) ? b[(n + 1) / 2] : (b[n / 2] + b[n / 2 + 1]) / 2
    }
    END {
      printf "median over %d rounds: CPU/req policy ÷ plain %.3f; user time %.3f; extra user time %.2f µs/req\n", n, med(t, n), med(u, n), med(dp, n)
    }' "$WORK/rounds.txt"
else
  secs=${3:-8}
  out=$OUT_DIR/perf-$SCENARIO-$stamp.data
  proxy_start_gatehouse "$mode" "$port"
  wait_port "$port" "$PROXY_PID" || die "Gatehouse did not listen (see $PROXY_DIR/gatehouse.log)"
  wrk_args=(-t1 -c32)
  for h in "${headers[@]}"; do wrk_args+=(-H "$h"); done
  taskset -c "$LOAD_CPU" wrk "${wrk_args[@]}" -d2s "http://127.0.0.1:$port/100b" >/dev/null
  taskset -c "$LOAD_CPU" wrk "${wrk_args[@]}" -d$((secs + 2))s "http://127.0.0.1:$port/100b" >"$WORK/wrk.txt" &
  wrk_pid=$!
  sleep 0.5
  perf record -F 4999 -g -p "$PROXY_PID" -o "$out" -- sleep "$secs" >/dev/null 2>&1
  wait "$wrk_pid"
  stop_pid "$PROXY_PID"
  log "$SCENARIO: $(awk '/^Requests\/sec/ {print $2}' "$WORK/wrk.txt") req/s under perf, $GATEHOUSE_BIN"
  perf report -i "$out" --no-children --sort dso -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -6
  perf report -i "$out" --no-children --sort sym -g none 2>/dev/null | grep -v '^#' | grep -v '^$' | head -40
  log "perf data: $out (perf report -i $out)"
fi
