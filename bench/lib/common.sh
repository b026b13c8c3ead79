# shellcheck shell=bash disable=SC2034
# (SC2034 off: the globals set here are read by bench/run.sh.)
# Helpers for bench/run.sh: logging, process control, /proc sampling, ports,
# and the wrk runner/parser. Sourced, never executed.

log() { printf '[bench %(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
die() { log "error: $*"; exit 1; }

# --- processes we started -------------------------------------------------
# Every background process the harness starts goes through spawn(); cleanup
# stops exactly those PIDs (and their descendants), nothing found by name.
declare -A LIVE_PIDS=()

# PRIO: prefix for every benchmark process; NICE=-10 (root) shields the runs
# from other work on a shared machine (nice and taskset both exec, so $! is the
# process itself)
PRIO=()
if [[ ${NICE:-0} != 0 ]]; then PRIO=(nice -n "$NICE"); fi

# spawn CPU LOGFILE CMD... -> SPAWNED_PID (CMD pinned to CPU via taskset, which execs it)
spawn() {
  local cpu=$1 logf=$2
  shift 2
  "${PRIO[@]}" taskset -c "$cpu" "$@" >>"$logf" 2>&1 &
  SPAWNED_PID=$!
  LIVE_PIDS[$SPAWNED_PID]=1
}

# alive PID: true while PID exists and is not a zombie
alive() {
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  s=${s##*) }
  [[ ${s%% *} != Z ]]
}

# tree_pids PID: PID and all its live descendants (nginx: master + worker)
tree_pids() {
  local c
  echo "$1"
  for c in $(ps -o pid= --ppid "$1" 2>/dev/null); do tree_pids "$c"; done
}

# stop_pid PID: SIGTERM the process, wait up to 5 s, then SIGKILL it and any
# descendant that outlived it. Reaps it (it is our child).
stop_pid() {
  local pid=$1 i kids
  kids=$(tree_pids "$pid" | tail -n +2 | tr '\n' ' ')
  if alive "$pid"; then
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      alive "$pid" || break
      sleep 0.1
    done
    if alive "$pid"; then kill -KILL "$pid" 2>/dev/null || true; fi
  fi
  wait "$pid" 2>/dev/null || true
  for i in $kids; do
    if alive "$i"; then kill -KILL "$i" 2>/dev/null || true; fi
  done
  unset "LIVE_PIDS[$pid]"
  return 0
}

stop_all() {
  local pid
  for pid in "${!LIVE_PIDS[@]}"; do stop_pid "$pid"; done
}

# --- /proc sampling ----------------------------------------------------------
CLK_TCK=$(getconf CLK_TCK)

# cpu_ticks PID: "USER SYSTEM" — utime and stime (clock ticks, all threads) summed over
# PID's tree. User time is the proxy's own code; system time is mostly the kernel's TCP path,
# which every proxy pays alike, so the split shows where a difference comes from.
cpu_ticks() {
  local p s user=0 sys=0 f
  for p in $(tree_pids "$1"); do
    s=$(cat "/proc/$p/stat" 2>/dev/null) || continue
    s=${s##*) }
    read -r -a f <<<"$s"
    # f[0] is field 3 (state); utime is field 14, stime field 15
    user=$((user + f[11])) sys=$((sys + f[12]))
  done
  echo "$user $sys"
}

# proc_status_sum PID FIELD: a numeric /proc/PID/status field (VmRSS in KiB,
# Threads) summed over PID's tree
proc_status_sum() {
  local p total=0 v
  for p in $(tree_pids "$1"); do
    v=$(awk -v f="$2:" '$1 == f {print $2}' "/proc/$p/status" 2>/dev/null) || true
    total=$((total + ${v:-0}))
  done
  echo "$total"
}

# runq_ns PID: nanoseconds PID's threads (whole tree) spent runnable but waiting
# for a CPU (field 2 of /proc/PID/task/TID/schedstat): how much other load
# on the machine held the process back
runq_ns() {
  local p f total=0 a
  for p in $(tree_pids "$1"); do
    for f in /proc/"$p"/task/*/schedstat; do
      read -r -a a <"$f" 2>/dev/null || continue
      total=$((total + a[1]))
    done
  done
  echo "$total"
}

# origin_accepts: connections the origin nginx has accepted so far (stub_status)
origin_accepts() {
  curl -s --max-time 2 "http://127.0.0.1:$UPSTREAM_PORT/nginx_status" | awk 'NR == 3 {print $1}'
}

# --- ports -------------------------------------------------------------------
declare -A USED_PORTS=()
# free_port: a random 127.0.0.1 port nobody listens on and we have not handed out
free_port() {
  local p i
  for ((i = 0; i < 200; i++)); do
    p=$((20000 + RANDOM % 40000))
    [[ -n ${USED_PORTS[$p]:-} ]] && continue
    if [[ -z $(ss -Htan "( sport = :$p )" 2>/dev/null) ]]; then
      USED_PORTS[$p]=1
      echo "$p"
      return 0
    fi
  done
  die "no free port found"
}

# wait_port PORT PID [SECONDS]: until PORT accepts connections; fails if PID dies
wait_port() {
  local port=$1 pid=$2 i
  for ((i = 0; i < ${3:-10} * 20; i++)); do
    alive "$pid" || return 1
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
    sleep 0.05
  done
  return 1
}

# --- load generation ---------------------------------------------------------
# run_load OUTFILE CMD...: a load generator pinned to LOAD_CPU. Started in the background
# and waited for, so a Ctrl-C / SIGTERM trap runs at once and stops it too.
run_load() {
  local out=$1
  shift
  : >"$out"
  spawn "$LOAD_CPU" "$out" "$@"
  wait "$SPAWNED_PID" || true
  unset "LIVE_PIDS[$SPAWNED_PID]"
}

# Converts wrk/h2load durations ("850.00us", "1.2ms", "2.1s") to milliseconds (awk).
AWK_MS='function ms(v) {
  if (v ~ /us$/) return v / 1000
  if (v ~ /ms$/) return v + 0
  if (v ~ /s$/) return v * 1000
  return v + 0
}'

# run_wrk SECONDS URL OUTFILE
run_wrk() {
  run_load "$3" wrk -t"$WRK_THREADS" -c"$CONNS" -d"$1s" --timeout "$WRK_TIMEOUT" "${REQ_HEADERS[@]}" --latency "$2"
}

# parse_wrk FILE -> "requests rps p50_ms p99_ms socket_errors non2xx"
parse_wrk() {
  awk "$AWK_MS"'
    $1 == "50%" { p50 = ms($2) }
    $1 == "99%" { p99 = ms($2) }
    / requests in / { req = $1 }
    /^Requests\/sec:/ { rps = $2 }
    /^ *Socket errors:/ { gsub(",", ""); err = $4 + $6 + $8 + $10 }
    /Non-2xx or 3xx responses:/ { non = $NF }
    END { printf "%d %.1f %.3f %.3f %d %d\n", req, rps, p50, p99, err, non }
  ' "$1"
}

# run_h2load SECONDS URL OUTFILE: h2load (HTTP/2 with prior knowledge for http:// URLs)
# pinned to LOAD_CPU, CONNS connections x H2_STREAMS concurrent streams, duration mode
run_h2load() {
  run_load "$3" h2load -t"$WRK_THREADS" -c"$CONNS" -m"${H2_STREAMS:-10}" -D"$1" "$2"
}

# parse_h2load FILE -> "requests rps mean_ms max_ms errors non2xx": h2load prints only
# min/max/mean/sd of request times, so the p50/p99 fields get the mean and the max.
# errors = errored + timed out requests; non2xx = 3xx + 4xx + 5xx responses.
parse_h2load() {
  awk "$AWK_MS"'
    /^finished in/ { rps = $4 }
    /^requests:/ { gsub(",", ""); req = $6; err = $12 + $14 }
    /^status codes:/ { gsub(",", ""); non = $5 + $7 + $9 }
    /^time for request:/ { mx = ms($5); mean = ms($6) }
    END { printf "%d %.1f %.3f %.3f %d %d\n", req, rps, mean, mx, err, non }
  ' "$1"
}

# Request headers every load generator and check sends in the current scenario (-H NAME: VALUE pairs).
REQ_HEADERS=()

# make_policy_credentials (policy-100b): a random HS256 secret, a subscription key and a token
# (sub bench-user, aud bench, valid for a day) signed with it.
make_policy_credentials() {
  BENCH_JWT_SECRET=$(openssl rand -hex 32)
  BENCH_SUB_KEY=$(openssl rand -hex 16)
  BENCH_JWT=$(python3 - "$BENCH_JWT_SECRET" <<'PY'
import base64, hashlib, hmac, json, sys, time
b64 = lambda b: base64.urlsafe_b64encode(b).rstrip(b"=")
head = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
now = int(time.time())
claims = {"iss": "bench-issuer", "aud": "bench", "sub": "bench-user", "iat": now, "exp": now + 86400}
body = b64(json.dumps(claims).encode())
sig = b64(hmac.new(sys.argv[1].encode(), head + b"." + body, hashlib.sha256).digest())
print((head + b"." + body + b"." + sig).decode())
PY
)
}
