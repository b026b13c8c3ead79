# shellcheck shell=bash disable=SC2034
# (SC2034 off: the globals set here are read by bench/run.sh.)
# The origin and the proxies under test. Sourced by bench/run.sh.
#
# Each proxy NAME provides:
#   proxy_available_NAME          -> 0 if it can run here (else prints why, returns 1)
#   proxy_start_NAME MODE PORT    -> starts it listening on 127.0.0.1:PORT; sets PROXY_PID,
#                                    PROXY_PORT, PROXY_DIR (config + logs); returns 2 if it
#                                    does not support MODE (the run is recorded as skipped)
# MODE is "plain" (HTTP/1.1), "tls" (TLS termination, cert $CERT/$KEY), "h2c" (HTTP/2 with
# prior knowledge), "routes10k" (10,000 prefixes /api0/ ... /api9999/, each forwarding to the
# origin without its prefix), "idle" (plain, connection limits raised to 20000) or "reload"
# (plain; Gatehouse only, with a second config variant). To add a mode, add a case to each
# start function.
# Globals used: WORK (temp dir), UPSTREAM_PORT, PROXY_CPU, LOAD_CPU, CERT, KEY, CERT_BUNDLE.

NGINX_BIN=${NGINX_BIN:-$(command -v nginx || echo /usr/sbin/nginx)}
HAPROXY_BIN=${HAPROXY_BIN:-$(command -v haproxy || echo /usr/sbin/haproxy)}
BENCH_DIR=${BENCH_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
if [[ -z ${GATEHOUSE_WRAP+x} ]]; then GATEHOUSE_WRAP=(); fi

# nginx's master drops to "nobody" for workers when root; our temp dir is 0700.
nginx_user_line() { if ((EUID == 0)); then echo "user root;"; fi; }

# nginx_run DIR CPU: start DIR/nginx.conf in the foreground pinned to CPU; sets SPAWNED_PID
nginx_run() {
  local dir=$1
  mkdir -p "$dir/logs"
  spawn "$2" "$dir/stdout.log" "$NGINX_BIN" -p "$dir" -e "$dir/logs/error.log" -c "$dir/nginx.conf"
}

# --- the origin: Debian nginx, 1 worker, fixed bodies, pinned with the load generator
start_upstream() {
  local dir=$WORK/upstream
  mkdir -p "$dir/www"
  UPSTREAM_PORT=$(free_port)
  head -c 16384 /dev/zero | tr '\0' 'b' >"$dir/www/16k"
  cat >"$dir/nginx.conf" <<EOF
$(nginx_user_line)
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    default_type application/octet-stream;
    server {
        listen 127.0.0.1:$UPSTREAM_PORT backlog=4096;
        # 100 bytes. 16 KiB is too long for an nginx config token, so /16k is a
        # static file served from the open-file cache.
        location = /100b { return 200 "$(printf 'a%.0s' {1..100})"; }
        location = /16k { root $dir/www; etag off; open_file_cache max=16 inactive=1h; open_file_cache_valid 1h; }
        location = /nginx_status { stub_status; }
    }
}
EOF
  nginx_run "$dir" "$LOAD_CPU"
  UPSTREAM_PID=$SPAWNED_PID
  wait_port "$UPSTREAM_PORT" "$UPSTREAM_PID" || die "origin nginx did not start: $(tail -5 "$dir/logs/error.log")"
}

# --- direct: no proxy, wrk straight at the origin (baseline; plain mode only)
proxy_available_direct() { return 0; }
proxy_start_direct() {
  [[ $1 == plain || $1 == policy || $1 == auth || $1 == hdr ]] || return 2
  PROXY_PID="" PROXY_DIR=""
  PROXY_PORT=$UPSTREAM_PORT
}

# --- nginx as reverse proxy
proxy_available_nginx() { [[ -x $NGINX_BIN ]] || { echo "nginx not found" >&2; return 1; }; }
proxy_start_nginx() {
  local mode=$1 port=$2 dir listen conns=4096 locations keepalive=64
  if [[ $mode == policy || $mode == auth || $mode == hdr ]]; then mode=plain; fi # the baseline: plain proxying
  # h1-100b-fwd: the fields Gatehouse sets on every request, set by nginx too.
  local fields='proxy_set_header Connection "";'
  if [[ $mode == fwd ]]; then
    mode=plain
    fields='proxy_set_header Connection "";
    proxy_set_header Host $http_host;
    proxy_set_header X-Forwarded-For $remote_addr;
    proxy_set_header X-Forwarded-Proto $scheme;
    proxy_set_header X-Forwarded-Host $host;
    proxy_set_header Forwarded "for=$remote_addr;proto=$scheme;host=$host";
    proxy_set_header X-Request-Id $request_id;
    add_header X-Request-Id $request_id always;'
  fi
  dir=$WORK/nginx-$mode-$port
  mkdir -p "$dir"
  PROXY_DIR=$dir
  locations='location / {
            proxy_pass http://origin;
        }'
  case $mode in
    plain) listen="listen 127.0.0.1:$port backlog=4096;" ;;
    # nginx 1.22: "http2" on a listen without "ssl" is HTTP/2 with prior knowledge only
    h2c)
      listen="listen 127.0.0.1:$port http2 backlog=4096;"
      # CONNS x H2_STREAMS (320) requests in flight: with 64 idle upstream connections
      # cached, nginx would open and close ~6000 origin connections a second
      keepalive=512
      ;;
    idle)
      listen="listen 127.0.0.1:$port backlog=4096;"
      conns=19000 # the machine's hard limit on open files is 20000 (see worker_rlimit_nofile)
      ;;
    routes10k)
      listen="listen 127.0.0.1:$port backlog=4096;"
      # /apiN/x -> origin /x, one prefix location per API (like Gatehouse's 10k APIs)
      locations=$(awk 'BEGIN { for (i = 0; i < 10000; i++) printf "location /api%d/ { proxy_pass http://origin/; }\n", i }')
      ;;
    tls) listen="listen 127.0.0.1:$port ssl backlog=4096;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;" ;;
    h2tls)
      listen="listen 127.0.0.1:$port ssl http2 backlog=4096;
        ssl_certificate $CERT;
        ssl_certificate_key $KEY;
        ssl_protocols TLSv1.2 TLSv1.3;"
      keepalive=512 # as h2c: CONNS x H2_STREAMS requests in flight
      ;;
    *) return 2 ;;
  esac
  cat >"$dir/nginx.conf" <<EOF
$(nginx_user_line)
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
worker_rlimit_nofile $((conns + 1000 > 20000 ? 20000 : conns + 1000));
events { worker_connections $conns; }
http {
    access_log off;
    keepalive_timeout 120s;
    keepalive_requests 10000000;
    proxy_http_version 1.1;
    $fields
    upstream origin {
        server 127.0.0.1:$UPSTREAM_PORT;
        keepalive $keepalive;
        keepalive_requests 10000000;
    }
    server {
        $listen
        $locations
    }
}
EOF
  nginx_run "$dir" "$PROXY_CPU"
  PROXY_PID=$SPAWNED_PID
  PROXY_PORT=$port
}

# --- HAProxy, one thread
proxy_available_haproxy() { [[ -x $HAPROXY_BIN ]] || { echo "haproxy not found" >&2; return 1; }; }
proxy_start_haproxy() {
  local mode=$1 port=$2 dir bind maxconn=4096
  if [[ $mode == policy || $mode == auth || $mode == hdr ]]; then mode=plain; fi # the baseline: plain proxying
  dir=$WORK/haproxy-$mode-$port
  mkdir -p "$dir"
  PROXY_DIR=$dir
  case $mode in
    plain) bind="bind 127.0.0.1:$port" ;;
    h2c) bind="bind 127.0.0.1:$port proto h2" ;;
    idle)
      bind="bind 127.0.0.1:$port"
      # HAProxy refuses to start unless ulimit-n >= 2 x maxconn + a few; the hard limit on open
      # files here is 20000, so it gets maxconn 9980 and bench/run.sh opens IDLE_CONNS_HAPROXY
      maxconn="9980
    ulimit-n 20000"
      ;;
    tls) bind="bind 127.0.0.1:$port ssl crt $CERT_BUNDLE alpn http/1.1" ;;
    h2tls) bind="bind 127.0.0.1:$port ssl crt $CERT_BUNDLE alpn h2,http/1.1" ;;
    *) return 2 ;;
  esac
  cat >"$dir/haproxy.cfg" <<EOF
global
    nbthread 1
    maxconn $maxconn
defaults
    mode http
    timeout connect 5s
    timeout client 60s
    timeout server 60s
    timeout http-keep-alive 60s
frontend fe
    $bind
    default_backend origin
backend origin
    http-reuse always
    server s1 127.0.0.1:$UPSTREAM_PORT
EOF
  spawn "$PROXY_CPU" "$dir/haproxy.log" "$HAPROXY_BIN" -db -f "$dir/haproxy.cfg"
  PROXY_PID=$SPAWNED_PID
  PROXY_PORT=$port
}

# --- Gatehouse, one worker; config rendered from bench/gatehouse-MODE.yaml
proxy_available_gatehouse() {
  [[ -x $GATEHOUSE_BIN ]] || { echo "gatehouse binary not found at $GATEHOUSE_BIN (set GATEHOUSE_BIN or CARGO_TARGET_DIR)" >&2; return 1; }
}
proxy_start_gatehouse() {
  local mode=$1 port=$2 dir tmpl
  case $mode in
    plain | hdr | fwd) tmpl=$BENCH_DIR/gatehouse-h1.yaml ;;
    h2c) tmpl=$BENCH_DIR/gatehouse-h2c.yaml ;; # a plain listener, which speaks h2c too
    routes10k) tmpl=$BENCH_DIR/gatehouse-routes10k.yaml ;;
    tls | h2tls) tmpl=$BENCH_DIR/gatehouse-tls.yaml ;; # ALPN offers h2 and http/1.1
    idle) tmpl=$BENCH_DIR/gatehouse-idle.yaml ;;
    reload) tmpl=$BENCH_DIR/gatehouse-reload-a.yaml ;;
    policy) tmpl=$BENCH_DIR/gatehouse-policy.yaml ;;
    auth) tmpl=$BENCH_DIR/gatehouse-auth.yaml ;;
    obsoff) tmpl=$BENCH_DIR/gatehouse-obs-off.yaml ;;
    obson) tmpl=$BENCH_DIR/gatehouse-obs-on.yaml ;;
    *) return 2 ;;
  esac
  dir=$WORK/gatehouse-$mode-$port
  mkdir -p "$dir"
  PROXY_DIR=$dir
  gatehouse_render "$tmpl" "$port" | sed -e "s|@DIR@|$dir|g" -e "s|@JWT_SECRET@|${BENCH_JWT_SECRET:-}|g" \
    >"$dir/gatehouse.yaml"
  if [[ $mode == routes10k ]]; then # 10,000 APIs /api0 ... /api9999, all to the origin
    awk 'BEGIN { for (i = 0; i < 10000; i++) printf "  api%d:\n    path: /api%d\n    backend: origin\n", i, i }' \
      >>"$dir/gatehouse.yaml"
  fi
  if [[ $mode == reload ]]; then # the two variants bench/run.sh alternates between on SIGHUP
    gatehouse_render "$tmpl" "$port" >"$dir/variant-a.yaml"
    gatehouse_render "$BENCH_DIR/gatehouse-reload-b.yaml" "$port" >"$dir/variant-b.yaml"
    "$GATEHOUSE_BIN" check -c "$dir/variant-b.yaml" >"$dir/check-b.log" 2>&1 ||
      { echo "gatehouse check rejected $dir/variant-b.yaml:" >&2; cat "$dir/check-b.log" >&2; return 1; }
  fi
  # GATEHOUSE_EXTRA_APIS: more entries for the config's `apis:` (its last section; bench/profile.sh
  # pair adds a plain API beside the policy one).
  if [[ -n ${GATEHOUSE_EXTRA_APIS:-} ]]; then printf '%s\n' "$GATEHOUSE_EXTRA_APIS" >>"$dir/gatehouse.yaml"; fi
  if ! "$GATEHOUSE_BIN" check -c "$dir/gatehouse.yaml" >"$dir/check.log" 2>&1; then
    echo "gatehouse check rejected $dir/gatehouse.yaml:" >&2
    cat "$dir/check.log" >&2
    return 1
  fi
  if [[ $mode == policy || $mode == auth ]]; then # the subscription the load generator's key belongs to
    printf '%s\n' "$BENCH_SUB_KEY" | "$GATEHOUSE_BIN" subscription create -c "$dir/gatehouse.yaml" \
      --name bench --product bench --primary-key - >"$dir/subscription.log" 2>&1 ||
      { echo "gatehouse subscription create failed:" >&2; cat "$dir/subscription.log" >&2; return 1; }
  fi
  # GATEHOUSE_WRAP: a command to run Gatehouse under (bench/profile.sh: valgrind).
  spawn "$PROXY_CPU" "$dir/gatehouse.log" "${GATEHOUSE_WRAP[@]}" "$GATEHOUSE_BIN" run -c "$dir/gatehouse.yaml"
  PROXY_PID=$SPAWNED_PID
  PROXY_PORT=$port
}

# gatehouse_render TEMPLATE PORT: the template with its placeholders filled in
gatehouse_render() {
  sed -e "s|@LISTEN_PORT@|$2|g" -e "s|@UPSTREAM_PORT@|$UPSTREAM_PORT|g" \
    -e "s|@CERT@|${CERT:-}|g" -e "s|@KEY@|${KEY:-}|g" "$1"
}

# make_cert: self-signed ECDSA P-256 for 127.0.0.1/localhost (TLS scenarios)
make_cert() {
  CERT=$WORK/cert.pem KEY=$WORK/key.pem CERT_BUNDLE=$WORK/bundle.pem
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=localhost -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" \
    -keyout "$KEY" -out "$CERT" >/dev/null 2>&1 || die "openssl could not make a certificate"
  cat "$CERT" "$KEY" >"$CERT_BUNDLE"
}

# --- gatehouse_b: a second Gatehouse binary (GATEHOUSE_B_BIN) in the same run, for A/B
# comparisons of two builds (e.g. PROXIES=nginx,gatehouse,gatehouse_b); same configs.
proxy_available_gatehouse_b() {
  [[ -x ${GATEHOUSE_B_BIN:-} ]] || { echo "set GATEHOUSE_B_BIN to a second gatehouse binary" >&2; return 1; }
}
proxy_start_gatehouse_b() {
  local GATEHOUSE_BIN=$GATEHOUSE_B_BIN
  proxy_start_gatehouse "$@"
}
