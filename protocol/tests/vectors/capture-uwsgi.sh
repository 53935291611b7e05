#!/usr/bin/env bash
# Regenerate the uwsgi wire-byte test vectors in this directory (capture.sh runs this at its
# end; it can also be run alone).
#
# Requires nginx, apache2 (with mod_proxy_uwsgi, in Debian's apache2-bin), curl and python3
# on PATH (this script installs nothing; on Debian: apt-get install nginx apache2 curl).
# Everything runs by hand on 127.0.0.1 (ports 19120-19149) with configs generated in a mktemp
# dir; nothing is started as a system service and every process started here is stopped by
# pid before exiting. KEEP_DIR=1 keeps the mktemp dir (configs, logs, every connection's
# bytes) for a look afterwards.
#
#   bash protocol/tests/vectors/capture-uwsgi.sh
set -euo pipefail
KEEP_DIR=${KEEP_DIR:-}

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CAPTURE="$HERE/capture.py"
for tool in nginx apache2 curl python3; do
    command -v "$tool" >/dev/null || { echo "capture-uwsgi.sh: $tool not found" >&2; exit 1; }
done
AMOD=/usr/lib/apache2/modules
[ -e "$AMOD/mod_proxy_uwsgi.so" ] || { echo "capture-uwsgi.sh: $AMOD/mod_proxy_uwsgi.so not found" >&2; exit 1; }

DIR="$(mktemp -d /tmp/wsgi-uwsgi-vectors.XXXXXX)"
OUT="$DIR/out"
mkdir -p "$OUT" "$DIR/logs"
DOCROOT=/var/www/html

# Ports: web servers listen on 1912N, the capture backend on 1913N/1914N.
NGX_GET=19121 NGX_POST=19122 NGX_BIG=19123 NGX_CHUNKED=19124 NGX_UNBUF=19125 APA=19126
BE_NGET=19131 BE_NPOST=19132 BE_NBIG=19133 BE_NCHUNKED=19134 BE_NUNBUF=19135
BE_AGET=19136 BE_APOST=19137 BE_ABIG=19138 BE_ACHUNKED=19139 BE_NTOOBIG=19140 BE_ATOOBIG=19141
CLEANENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C)

VECTORS=(nginx-uwsgi-get nginx-uwsgi-post nginx-uwsgi-bigparams nginx-uwsgi-chunked
         nginx-uwsgi-chunked-unbuffered apache-uwsgi-get apache-uwsgi-post apache-uwsgi-bigparams)

CAP_PID="" NGX_PID="" APA_PID=""
stop_pid() {  # stop_pid PID SIGNAL: signal one process we started, wait for it
    local pid="$1" sig="$2" i
    [ -n "$pid" ] || return 0
    kill -0 "$pid" 2>/dev/null || return 0
    kill "-$sig" "$pid" 2>/dev/null || true
    for i in $(seq 1 100); do
        kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
        sleep 0.1
    done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
}
cleanup() {
    stop_pid "$NGX_PID" QUIT
    stop_pid "$APA_PID" TERM
    stop_pid "$CAP_PID" TERM
    NGX_PID="" APA_PID="" CAP_PID=""
}
fail() {
    echo "capture-uwsgi.sh: FAIL: $*" >&2
    for f in "$DIR"/logs/* "$DIR"/error.log "$DIR"/apache-error.log; do
        if [ -s "$f" ]; then echo "--- $f" >&2; tail -n 20 "$f" >&2; fi
    done
    exit 1
}
trap 'cleanup; [ -n "$KEEP_DIR" ] || rm -rf "$DIR"' EXIT

wait_port() {  # wait_port PORT: until something listens on 127.0.0.1:PORT
    local i
    for i in $(seq 1 100); do
        if python3 -c '
import socket, sys
s = socket.socket(); s.settimeout(0.2)
sys.exit(0 if s.connect_ex(("127.0.0.1", int(sys.argv[1]))) == 0 else 1)' "$1"; then
            return 0
        fi
        sleep 0.1
    done
    fail "nothing listening on 127.0.0.1:$1"
}

# ---------------------------------------------------------------- backend
python3 "$CAPTURE" serve "$OUT" \
    "uwsgi:$BE_NGET:nginx-uwsgi-get" \
    "uwsgi:$BE_NPOST:nginx-uwsgi-post" \
    "uwsgi:$BE_NBIG:nginx-uwsgi-bigparams" \
    "uwsgi:$BE_NCHUNKED:nginx-uwsgi-chunked" \
    "uwsgi:$BE_NUNBUF:nginx-uwsgi-chunked-unbuffered" \
    "uwsgi:$BE_AGET:apache-uwsgi-get" \
    "uwsgi:$BE_APOST:apache-uwsgi-post" \
    "uwsgi:$BE_ABIG:apache-uwsgi-bigparams" \
    "uwsgi:$BE_ACHUNKED:apache-uwsgi-chunked" \
    "uwsgi:$BE_NTOOBIG:nginx-uwsgi-toobig" \
    "uwsgi:$BE_ATOOBIG:apache-uwsgi-toobig" \
    >"$DIR/logs/capture.out" 2>"$DIR/logs/capture.err" &
CAP_PID=$!
for i in $(seq 1 100); do
    grep -q ready "$DIR/logs/capture.out" 2>/dev/null && break
    kill -0 "$CAP_PID" 2>/dev/null || break
    sleep 0.1
done
grep -q ready "$DIR/logs/capture.out" || fail "capture.py did not start"

# ---------------------------------------------------------------- nginx
NGX_COMMON="root $DOCROOT; server_name localhost;"
cat >"$DIR/nginx.conf" <<NGINX
user root;
worker_processes 1;
daemon off;
master_process on;
error_log $DIR/error.log info;
pid $DIR/nginx.pid;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path $DIR/client_body_temp;
    fastcgi_temp_path $DIR/fastcgi_temp;
    scgi_temp_path $DIR/scgi_temp;
    proxy_temp_path $DIR/proxy_temp;
    uwsgi_temp_path $DIR/uwsgi_temp;
    client_max_body_size 4m;

    server {
        listen 127.0.0.1:$NGX_GET;
        $NGX_COMMON
        location / { include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:$BE_NGET; }
    }
    server {
        listen 127.0.0.1:$NGX_POST;
        $NGX_COMMON
        location / { include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:$BE_NPOST; }
    }
    server {
        listen 127.0.0.1:$NGX_BIG;
        $NGX_COMMON
        client_header_buffer_size 16k;
        large_client_header_buffers 8 16k;
        location / { include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:$BE_NBIG; }
        location /toobig/ { include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:$BE_NTOOBIG; }
    }
    server {
        listen 127.0.0.1:$NGX_CHUNKED;
        $NGX_COMMON
        location / { include /etc/nginx/uwsgi_params; uwsgi_pass 127.0.0.1:$BE_NCHUNKED; }
    }
    server {
        listen 127.0.0.1:$NGX_UNBUF;
        $NGX_COMMON
        location / {
            include /etc/nginx/uwsgi_params;
            uwsgi_request_buffering off;
            uwsgi_pass 127.0.0.1:$BE_NUNBUF;
        }
    }
}
NGINX
"${CLEANENV[@]}" nginx -p "$DIR" -c "$DIR/nginx.conf" -t >"$DIR/logs/nginx-t.log" 2>&1 || fail "nginx -t"
"${CLEANENV[@]}" nginx -p "$DIR" -c "$DIR/nginx.conf" >"$DIR/logs/nginx.out" 2>&1 &
NGX_PID=$!

# ---------------------------------------------------------------- apache2
cat >"$DIR/apache2.conf" <<APACHE
ServerRoot "$DIR"
LoadModule mpm_event_module $AMOD/mod_mpm_event.so
LoadModule authz_core_module $AMOD/mod_authz_core.so
LoadModule proxy_module $AMOD/mod_proxy.so
LoadModule proxy_uwsgi_module $AMOD/mod_proxy_uwsgi.so
User www-data
Group www-data
ServerName localhost
Listen 127.0.0.1:$APA
PidFile $DIR/apache2.pid
ErrorLog $DIR/apache-error.log
LogLevel info
DocumentRoot $DOCROOT
StartServers 1
ServerLimit 1
ThreadsPerChild 8
MaxRequestWorkers 8
ProxyPass "/get/" "uwsgi://127.0.0.1:$BE_AGET/"
ProxyPass "/post/" "uwsgi://127.0.0.1:$BE_APOST/"
ProxyPass "/big/" "uwsgi://127.0.0.1:$BE_ABIG/"
ProxyPass "/chunked/" "uwsgi://127.0.0.1:$BE_ACHUNKED/"
ProxyPass "/toobig/" "uwsgi://127.0.0.1:$BE_ATOOBIG/"
APACHE
"${CLEANENV[@]}" apache2 -f "$DIR/apache2.conf" -t >"$DIR/logs/apache2-t.log" 2>&1 || fail "apache2 -t"
"${CLEANENV[@]}" apache2 -f "$DIR/apache2.conf" -DFOREGROUND >"$DIR/logs/apache2.out" 2>&1 &
APA_PID=$!

for p in $NGX_GET $NGX_POST $NGX_BIG $NGX_CHUNKED $NGX_UNBUF $APA; do wait_port "$p"; done

# ---------------------------------------------------------------- requests
CURL=(curl -sS --max-time 20 -H 'User-Agent: wsgi-gateway-capture/1' -H 'Expect:')

check() {  # check NAME EXPECTED ACTUAL
    if [ "$2" != "$3" ]; then
        fail "$1: expected $(printf %q "$2"), got $(printf %q "$3")"
    fi
    echo "capture-uwsgi.sh: $1: http ok ($(printf %q "$3"))"
}
OK200=$'ok\n200'

# deterministic 200 KiB body: bytes (i*31 + i>>8) & 0xff (as capture.sh's)
python3 -c '
import sys
sys.stdout.buffer.write(bytes(((i * 31) + (i >> 8)) & 0xFF for i in range(200 * 1024)))' >"$DIR/post-body.bin"
head -c 5000 "$DIR/post-body.bin" >"$DIR/chunked-body.bin"

# A header given twice (two Cookie lines): nginx passes each as its own var.
GET_HEADERS=(-H 'Accept: text/plain' -H 'X-Request-Id: get-1' -H 'Cookie: a=1' -H 'Cookie: b=2')
r=$("${CURL[@]}" -w '%{http_code}' "${GET_HEADERS[@]}" "http://127.0.0.1:$NGX_GET/app/hello?x=1")
check nginx-uwsgi-get "$OK200" "$r"
r=$("${CURL[@]}" -w '%{http_code}' "${GET_HEADERS[@]}" "http://127.0.0.1:$APA/get/app/hello?x=1")
check apache-uwsgi-get "$OK200" "$r"

POST=(-X POST -H 'Content-Type: application/octet-stream' -H 'X-Request-Id: post-1'
      --data-binary "@$DIR/post-body.bin")
r=$("${CURL[@]}" -w '%{http_code}' "${POST[@]}" "http://127.0.0.1:$NGX_POST/app/upload?kind=blob")
check nginx-uwsgi-post "$OK200" "$r"
r=$("${CURL[@]}" -w '%{http_code}' "${POST[@]}" "http://127.0.0.1:$APA/post/app/upload?kind=blob")
check apache-uwsgi-post "$OK200" "$r"

big_headers() {  # big_headers COUNT SIZE: fills BIG with COUNT distinct X-Big-N headers
    local n
    BIG=()
    for n in $(seq 1 "$1"); do
        BIG+=(-H "X-Big-$n: $(python3 -c '
import sys
n, size = int(sys.argv[1]), int(sys.argv[2])
print("".join(chr(97 + (n + i) % 26) for i in range(size)))' "$n" "$2")")
    done
}
# As big as both accept: 8 x 7500 bytes, ~61 KiB of vars.
big_headers 8 7500
r=$("${CURL[@]}" -w '%{http_code}' "${BIG[@]}" "http://127.0.0.1:$NGX_BIG/app/big?y=2")
check nginx-uwsgi-bigparams "$OK200" "$r"
r=$("${CURL[@]}" -w '%{http_code}' "${BIG[@]}" "http://127.0.0.1:$APA/big/app/big?y=2")
check apache-uwsgi-bigparams "$OK200" "$r"
# Past 64 KiB of vars neither sends anything: 9 x 7500 bytes. nginx does not connect;
# Apache connects, then closes without sending a byte.
big_headers 9 7500
r=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "${BIG[@]}" "http://127.0.0.1:$NGX_BIG/toobig/x")
check nginx-uwsgi-toobig 500 "$r"
r=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "${BIG[@]}" "http://127.0.0.1:$APA/toobig/x")
check apache-uwsgi-toobig 500 "$r"

CHUNKED=(-X POST -H 'Content-Type: application/octet-stream' -H 'Transfer-Encoding: chunked'
         --data-binary "@$DIR/chunked-body.bin")
r=$("${CURL[@]}" -w '%{http_code}' "${CHUNKED[@]}" "http://127.0.0.1:$NGX_CHUNKED/app/chunked")
check nginx-uwsgi-chunked "$OK200" "$r"
r=$("${CURL[@]}" -w '%{http_code}' "${CHUNKED[@]}" "http://127.0.0.1:$NGX_UNBUF/app/chunked")
check nginx-uwsgi-chunked-unbuffered "$OK200" "$r"
r=$("${CURL[@]}" -o /dev/null -w '%{http_code}' "${CHUNKED[@]}" "http://127.0.0.1:$APA/chunked/app/chunked")
check apache-uwsgi-chunked 411 "$r"

# ---------------------------------------------------------------- collect
stop_pid "$NGX_PID" QUIT; NGX_PID=""
stop_pid "$APA_PID" TERM; APA_PID=""
for i in $(seq 1 100); do
    missing=0
    for v in "${VECTORS[@]}"; do [ -e "$OUT/$v.expect" ] || missing=1; done
    [ "$missing" = 0 ] && break
    sleep 0.1
done
stop_pid "$CAP_PID" TERM; CAP_PID=""

for v in "${VECTORS[@]}"; do
    [ -s "$OUT/$v.bin" ] || fail "$v.bin missing or empty"
    [ -s "$OUT/$v.expect" ] || fail "$v.expect missing or empty"
    if grep -q '^decode-error' "$OUT/$v.expect"; then fail "$v: $(cat "$OUT/$v.expect")"; fi
    grep -q '^request ' "$OUT/$v.expect" || fail "$v.expect has no request line"
    grep -q '^stdin ' "$OUT/$v.expect" || fail "$v.expect has no stdin line"
    python3 "$CAPTURE" decode uwsgi "$OUT/$v.bin" | cmp -s - "$OUT/$v.expect" \
        || fail "$v: offline decode differs from live .expect"
done
# The refused requests (vars over 64 KiB, Apache's chunked body) sent nothing to the backend:
# Apache opened a connection and closed it, nginx did not connect.
for v in apache-uwsgi-toobig apache-uwsgi-chunked; do
    [ -e "$OUT/$v.bin" ] || fail "$v: Apache did not connect (it used to connect and close)"
    [ ! -s "$OUT/$v.bin" ] || fail "$v: Apache sent $(stat -c %s "$OUT/$v.bin") bytes"
    echo "capture-uwsgi.sh: $v: connected, sent nothing, closed"
done
[ ! -e "$OUT/nginx-uwsgi-toobig.bin" ] || fail "nginx-uwsgi-toobig: nginx connected"
extra=$(cd "$OUT" && ls | grep -v -x -F -f <(for v in "${VECTORS[@]}" apache-uwsgi-toobig apache-uwsgi-chunked; do echo "$v.bin"; echo "$v.expect"; done) || true)
[ -z "$extra" ] || fail "unexpected extra connections/files: $extra"

for v in "${VECTORS[@]}"; do
    cp "$OUT/$v.bin" "$OUT/$v.expect" "$HERE/"
done
echo "capture-uwsgi.sh: wrote ${#VECTORS[@]} vectors to $HERE"
echo "capture-uwsgi.sh: $(nginx -v 2>&1); $(apache2 -v | head -n1)"
