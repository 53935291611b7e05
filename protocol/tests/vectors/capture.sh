#!/usr/bin/env bash
# Regenerate the FastCGI / SCGI wire-byte test vectors in this directory, then the uwsgi
# ones (capture-uwsgi.sh).
#
# Requires nginx, lighttpd, apache2, curl and python3 on PATH (this script
# installs nothing; on Debian: apt-get install nginx lighttpd apache2 curl).  Everything runs by hand on 127.0.0.1 (ports 19100-19199) with
# configs generated in a mktemp dir; nothing is started as a system service
# and every process started here is stopped by pid before exiting.
#
#   bash protocol/tests/vectors/capture.sh
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
CAPTURE="$HERE/capture.py"
for tool in nginx lighttpd apache2 curl python3; do
    command -v "$tool" >/dev/null || { echo "capture.sh: $tool not found" >&2; exit 1; }
done

DIR="$(mktemp -d /tmp/wsgi-vectors.XXXXXX)"
OUT="$DIR/out"
mkdir -p "$OUT" "$DIR/logs"
# Fixed, existing document root so that DOCUMENT_ROOT does not leak the temp dir.
DOCROOT=/var/www/html

# Ports: web servers listen on 1910N, the capture backend on 1911N.
NGX_GET=19101 NGX_POST=19102 NGX_KEEP=19103 NGX_BIG=19104 NGX_SCGI=19105
LTY_FCGI=19106 LTY_SCGI=19107 APA_BIG=19108
BE_GET=19111 BE_POST=19112 BE_KEEP=19113 BE_BIG=19114 BE_NSCGI=19115
BE_LFCGI=19116 BE_LSCGI=19117 BE_ABIG=19118
# The servers run with a fixed, minimal environment (Apache forwards PATH).
CLEANENV=(env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C)

VECTORS=(nginx-fcgi-get nginx-fcgi-post nginx-fcgi-keepconn nginx-fcgi-bigparams
         nginx-scgi-post lighttpd-fcgi-post lighttpd-scgi-get apache-fcgi-bigparams)

CAP_PID="" NGX_PID="" LTY_PID="" APA_PID=""
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
    stop_pid "$LTY_PID" TERM
    stop_pid "$APA_PID" TERM
    stop_pid "$CAP_PID" TERM
    NGX_PID="" LTY_PID="" APA_PID="" CAP_PID=""
}
fail() {
    echo "capture.sh: FAIL: $*" >&2
    for f in "$DIR"/logs/* "$DIR"/error.log "$DIR"/lighttpd-error.log "$DIR"/apache-error.log; do
        if [ -s "$f" ]; then echo "--- $f" >&2; tail -n 20 "$f" >&2; fi
    done
    exit 1
}
trap 'cleanup; rm -rf "$DIR"' EXIT

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
    "fcgi:$BE_GET:nginx-fcgi-get" \
    "fcgi:$BE_POST:nginx-fcgi-post" \
    "fcgi:$BE_KEEP:nginx-fcgi-keepconn" \
    "fcgi:$BE_BIG:nginx-fcgi-bigparams" \
    "scgi:$BE_NSCGI:nginx-scgi-post" \
    "fcgi:$BE_LFCGI:lighttpd-fcgi-post" \
    "scgi:$BE_LSCGI:lighttpd-scgi-get" \
    "fcgi:$BE_ABIG:apache-fcgi-bigparams" \
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

    upstream keepconn_backend {
        server 127.0.0.1:$BE_KEEP;
        keepalive 4;
    }

    server {
        listen 127.0.0.1:$NGX_GET;
        $NGX_COMMON
        location / { include /etc/nginx/fastcgi_params; fastcgi_pass 127.0.0.1:$BE_GET; }
    }
    server {
        listen 127.0.0.1:$NGX_POST;
        $NGX_COMMON
        location / { include /etc/nginx/fastcgi_params; fastcgi_pass 127.0.0.1:$BE_POST; }
    }
    server {
        listen 127.0.0.1:$NGX_KEEP;
        $NGX_COMMON
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_keep_conn on;
            fastcgi_pass keepconn_backend;
        }
    }
    server {
        listen 127.0.0.1:$NGX_BIG;
        $NGX_COMMON
        client_header_buffer_size 16k;
        large_client_header_buffers 8 16k;
        location / {
            include /etc/nginx/fastcgi_params;
            fastcgi_pass 127.0.0.1:$BE_BIG;
        }
    }
    server {
        listen 127.0.0.1:$NGX_SCGI;
        $NGX_COMMON
        location / { include /etc/nginx/scgi_params; scgi_pass 127.0.0.1:$BE_NSCGI; }
    }
}
NGINX
"${CLEANENV[@]}" nginx -p "$DIR" -c "$DIR/nginx.conf" -t >"$DIR/logs/nginx-t.log" 2>&1 || fail "nginx -t"
"${CLEANENV[@]}" nginx -p "$DIR" -c "$DIR/nginx.conf" >"$DIR/logs/nginx.out" 2>&1 &
NGX_PID=$!

# ---------------------------------------------------------------- lighttpd
cat >"$DIR/lighttpd.conf" <<LIGHTTPD
server.modules = ( "mod_fastcgi", "mod_scgi" )
server.document-root = "$DOCROOT"
server.bind = "127.0.0.1"
server.port = $LTY_FCGI
server.errorlog = "$DIR/lighttpd-error.log"
server.pid-file = "$DIR/lighttpd.pid"
server.upload-dirs = ( "$DIR" )
server.max-worker = 0
\$SERVER["socket"] == "127.0.0.1:$LTY_FCGI" {
    fastcgi.server = ( "/app" => ( ( "host" => "127.0.0.1", "port" => $BE_LFCGI,
                                     "check-local" => "disable" ) ) )
}
\$SERVER["socket"] == "127.0.0.1:$LTY_SCGI" {
    scgi.server = ( "/app" => ( ( "host" => "127.0.0.1", "port" => $BE_LSCGI,
                                  "check-local" => "disable" ) ) )
}
LIGHTTPD
"${CLEANENV[@]}" lighttpd -t -f "$DIR/lighttpd.conf" >"$DIR/logs/lighttpd-t.log" 2>&1 || fail "lighttpd -t"
"${CLEANENV[@]}" lighttpd -D -f "$DIR/lighttpd.conf" >"$DIR/logs/lighttpd.out" 2>&1 &
LTY_PID=$!

# ---------------------------------------------------------------- apache2
# nginx and lighttpd always send the whole PARAMS stream as ONE record and
# refuse (nginx: "fastcgi request record is too big", 500) or cannot receive
# (lighttpd: 431 past 64 KiB of request headers) anything larger.  Apache's
# mod_proxy_fcgi splits a large environment over several PARAMS records, so
# it provides the multi-record PARAMS vector.
AMOD=/usr/lib/apache2/modules
cat >"$DIR/apache2.conf" <<APACHE
ServerRoot "$DIR"
LoadModule mpm_event_module $AMOD/mod_mpm_event.so
LoadModule authz_core_module $AMOD/mod_authz_core.so
LoadModule proxy_module $AMOD/mod_proxy.so
LoadModule proxy_fcgi_module $AMOD/mod_proxy_fcgi.so
User www-data
Group www-data
ServerName localhost
Listen 127.0.0.1:$APA_BIG
PidFile $DIR/apache2.pid
ErrorLog $DIR/apache-error.log
LogLevel info
DocumentRoot $DOCROOT
StartServers 1
ServerLimit 1
ThreadsPerChild 8
MaxRequestWorkers 8
ProxyPass "/app/" "fcgi://127.0.0.1:$BE_ABIG/app/"
APACHE
"${CLEANENV[@]}" apache2 -f "$DIR/apache2.conf" -t >"$DIR/logs/apache2-t.log" 2>&1 || fail "apache2 -t"
"${CLEANENV[@]}" apache2 -f "$DIR/apache2.conf" -DFOREGROUND >"$DIR/logs/apache2.out" 2>&1 &
APA_PID=$!

for p in $NGX_GET $NGX_POST $NGX_KEEP $NGX_BIG $NGX_SCGI $LTY_FCGI $LTY_SCGI $APA_BIG; do wait_port "$p"; done

# ---------------------------------------------------------------- requests
CURL=(curl -sS --max-time 20 -H 'User-Agent: wsgi-gateway-capture/1' -H 'Expect:')

check() {  # check NAME EXPECTED ACTUAL
    if [ "$2" != "$3" ]; then
        fail "$1: expected $(printf %q "$2"), got $(printf %q "$3")"
    fi
    echo "capture.sh: $1: http ok"
}
OK200=$'ok\n200'

# deterministic 200 KiB body: bytes (i*31 + i>>8) & 0xff
python3 -c '
import sys
sys.stdout.buffer.write(bytes(((i * 31) + (i >> 8)) & 0xFF for i in range(200 * 1024)))' >"$DIR/post-body.bin"

r=$("${CURL[@]}" -w '%{http_code}' \
    -H 'Accept: text/plain' -H 'X-Request-Id: get-1' -H 'Cookie: a=1; b=2' \
    "http://127.0.0.1:$NGX_GET/app/hello?x=1")
check nginx-fcgi-get "$OK200" "$r"

r=$("${CURL[@]}" -w '%{http_code}' -X POST \
    -H 'Content-Type: application/octet-stream' -H 'X-Request-Id: post-1' \
    --data-binary "@$DIR/post-body.bin" \
    "http://127.0.0.1:$NGX_POST/app/upload?kind=blob")
check nginx-fcgi-post "$OK200" "$r"

# Two URLs in one curl invocation: one HTTP connection, and with
# fastcgi_keep_conn + keepalive one upstream connection.
r=$("${CURL[@]}" -w '%{http_code} %{num_connects}\n' \
    -H 'X-Request-Id: keep' \
    "http://127.0.0.1:$NGX_KEEP/app/first?n=1" \
    "http://127.0.0.1:$NGX_KEEP/app/second?n=2")
check nginx-fcgi-keepconn $'ok\n200 1\nok\n200 0' "$r"

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
# nginx: as big as it accepts (8 x 7500 bytes, ~61 KiB PARAMS in one record)
big_headers 8 7500
r=$("${CURL[@]}" -w '%{http_code}' "${BIG[@]}" "http://127.0.0.1:$NGX_BIG/app/big?y=2")
check nginx-fcgi-bigparams "$OK200" "$r"

# apache: 10 x 8000 bytes, ~80 KiB PARAMS split over several records
big_headers 10 8000
r=$("${CURL[@]}" -w '%{http_code}' "${BIG[@]}" "http://127.0.0.1:$APA_BIG/app/big?y=2")
check apache-fcgi-bigparams "$OK200" "$r"

r=$("${CURL[@]}" -w '%{http_code}' -X POST \
    -H 'Content-Type: application/x-www-form-urlencoded' \
    --data-binary 'hello=world' "http://127.0.0.1:$NGX_SCGI/app/form?z=3")
check nginx-scgi-post "$OK200" "$r"

r=$("${CURL[@]}" -w '%{http_code}' -X POST \
    -H 'Content-Type: application/x-www-form-urlencoded' -H 'X-Request-Id: lpost' \
    --data-binary 'hello=world&n=42' "http://127.0.0.1:$LTY_FCGI/app/form?a=b")
check lighttpd-fcgi-post "$OK200" "$r"

r=$("${CURL[@]}" -w '%{http_code}' -H 'Accept: text/plain' \
    "http://127.0.0.1:$LTY_SCGI/app/path/info?q=search+term&lang=en")
check lighttpd-scgi-get "$OK200" "$r"

# ---------------------------------------------------------------- collect
# Stopping the web servers closes any kept-alive upstream connection, which
# makes capture.py write the last .bin/.expect files.
stop_pid "$NGX_PID" QUIT; NGX_PID=""
stop_pid "$LTY_PID" TERM; LTY_PID=""
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
    # the offline decoder must agree with what the server wrote
    mode=fcgi; case "$v" in *scgi*) mode=scgi ;; esac
    python3 "$CAPTURE" decode "$mode" "$OUT/$v.bin" | cmp -s - "$OUT/$v.expect" \
        || fail "$v: offline decode differs from live .expect"
done
extra=$(cd "$OUT" && ls | grep -v -x -F -f <(for v in "${VECTORS[@]}"; do echo "$v.bin"; echo "$v.expect"; done) || true)
[ -z "$extra" ] || fail "unexpected extra connections/files: $extra"
[ "$(grep -c '^request ' "$OUT/nginx-fcgi-keepconn.expect")" = 2 ] \
    || fail "keepconn: expected 2 requests on one backend connection"
python3 - "$CAPTURE" "$OUT/apache-fcgi-bigparams.bin" <<'PY' || fail "apache-fcgi-bigparams: PARAMS not multi-record / not > 64 KiB"
import importlib.util, sys
spec = importlib.util.spec_from_file_location("capture", sys.argv[1])
capture = importlib.util.module_from_spec(spec)
spec.loader.exec_module(capture)
data = open(sys.argv[2], "rb").read()
sizes = [len(c) for _v, t, _i, c, _p, _o in capture.split_fcgi_records(data) if t == capture.FCGI_PARAMS and c]
print("capture.sh: apache-fcgi-bigparams PARAMS records:", sizes, "total", sum(sizes))
sys.exit(0 if len(sizes) >= 2 and sum(sizes) > 65535 else 1)
PY

for v in "${VECTORS[@]}"; do
    cp "$OUT/$v.bin" "$OUT/$v.expect" "$HERE/"
done
echo "capture.sh: wrote ${#VECTORS[@]} vectors to $HERE"
echo "capture.sh: $(nginx -v 2>&1); $(lighttpd -v 2>&1 | head -n1); $(apache2 -v | head -n1)"

# The uwsgi vectors (nginx uwsgi_pass, Apache mod_proxy_uwsgi) have a script of their own.
bash "$HERE/capture-uwsgi.sh"
