#!/usr/bin/env python3
"""Capture backend for FastCGI / SCGI / uwsgi test vectors (python3 stdlib only).

Server mode: listen on one or more 127.0.0.1 ports; every byte received on a
connection is appended (and flushed) to OUTDIR/<name>.bin.  The backend
answers just enough for the web server to be satisfied:

  * fcgi: when a request's STDIN stream ends (empty STDIN record) reply with
    one STDOUT record carrying a tiny CGI response, an empty STDOUT record and
    END_REQUEST(appStatus=0, protocolStatus=0).  Close afterwards unless the
    BEGIN_REQUEST had FCGI_KEEP_CONN set.
  * scgi: read the netstring header and CONTENT_LENGTH body bytes, reply and
    close.
  * uwsgi: read the packet (4-byte header and vars) and CONTENT_LENGTH body
    bytes (none when CONTENT_LENGTH is absent or empty), reply with an HTTP
    status line head, then keep recording for up to a second in case the web
    server sends more than it announced, and close.

When a connection ends, the recorded bytes are decoded independently (by the
decoder below, which works on the whole byte string, not on the live
parser's state) and written to OUTDIR/<name>.expect.

The first connection for a name is stored as <name>.bin; any further
connection for the same name goes to <name>.connN.bin (capture.sh treats that
as an error).

Usage:
  capture.py serve OUTDIR MODE:PORT:NAME [MODE:PORT:NAME ...]
  capture.py decode MODE FILE.bin          # print the .expect text (fcgi|scgi|uwsgi)
  capture.py records FILE.bin              # list FastCGI records (debug)
"""

import hashlib
import os
import signal
import socket
import struct
import sys
import threading

FCGI_BEGIN_REQUEST = 1
FCGI_ABORT_REQUEST = 2
FCGI_END_REQUEST = 3
FCGI_PARAMS = 4
FCGI_STDIN = 5
FCGI_STDOUT = 6
FCGI_STDERR = 7
FCGI_DATA = 8
FCGI_GET_VALUES = 9
FCGI_GET_VALUES_RESULT = 10
FCGI_UNKNOWN_TYPE = 11
FCGI_KEEP_CONN = 1

TYPE_NAMES = {
    1: "BEGIN_REQUEST", 2: "ABORT_REQUEST", 3: "END_REQUEST", 4: "PARAMS",
    5: "STDIN", 6: "STDOUT", 7: "STDERR", 8: "DATA", 9: "GET_VALUES",
    10: "GET_VALUES_RESULT", 11: "UNKNOWN_TYPE",
}

RESPONSE = b"Status: 200 OK\r\nContent-Type: text/plain\r\n\r\nok\n"
# uwsgi responses are raw HTTP.
HTTP_RESPONSE = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nok\n"


# ---------------------------------------------------------------- encoding

def fcgi_record(rtype, req_id, content=b""):
    return struct.pack(">BBHHBB", 1, rtype, req_id, len(content), 0, 0) + content


def fcgi_reply(req_id):
    return (fcgi_record(FCGI_STDOUT, req_id, RESPONSE)
            + fcgi_record(FCGI_STDOUT, req_id)
            + fcgi_record(FCGI_END_REQUEST, req_id,
                          struct.pack(">IB3x", 0, 0)))


# ---------------------------------------------------------------- decoding
# Independent, whole-buffer decoders used to produce the .expect files.

class DecodeError(Exception):
    pass


def split_fcgi_records(data):
    """Yield (version, type, req_id, content, padding_len, offset)."""
    pos = 0
    while pos < len(data):
        if len(data) - pos < 8:
            raise DecodeError("truncated record header at offset %d" % pos)
        ver, rtype, rid, clen, plen, _res = struct.unpack_from(">BBHHBB", data, pos)
        end = pos + 8 + clen + plen
        if end > len(data):
            raise DecodeError("truncated record body at offset %d" % pos)
        yield ver, rtype, rid, data[pos + 8:pos + 8 + clen], plen, pos
        pos = end


def decode_fcgi_pairs(buf):
    pairs = []
    pos = 0

    def read_len():
        nonlocal pos
        if pos >= len(buf):
            raise DecodeError("truncated name-value length")
        b = buf[pos]
        if b & 0x80:
            if pos + 4 > len(buf):
                raise DecodeError("truncated 4-byte name-value length")
            n = struct.unpack_from(">I", buf, pos)[0] & 0x7FFFFFFF
            pos += 4
        else:
            n = b
            pos += 1
        return n

    while pos < len(buf):
        nlen = read_len()
        vlen = read_len()
        if pos + nlen + vlen > len(buf):
            raise DecodeError("truncated name-value data")
        name = buf[pos:pos + nlen]
        pos += nlen
        value = buf[pos:pos + vlen]
        pos += vlen
        pairs.append((name, value))
    return pairs


def fmt_value(value):
    if len(value) > 80:
        return "<len %d sha256 %s>" % (len(value), hashlib.sha256(value).hexdigest()[:16])
    return repr(value.decode("latin-1"))


def request_lines(req_id, role, keep_conn, pairs):
    total = sum(len(n) + len(v) for n, v in pairs)
    out = ["request %d role=%d keep_conn=%d params=%d bytes=%d"
           % (req_id, role, keep_conn, len(pairs), total)]
    for n, v in pairs:
        out.append("param %s=%s" % (n.decode("latin-1"), fmt_value(v)))
    return out


def stdin_line(req_id, body):
    return "stdin %d %d %s" % (req_id, len(body), hashlib.sha256(body).hexdigest())


def decode_fcgi(data):
    lines = []
    reqs = {}  # id -> dict(role, keep, params(bytearray), stdin(bytearray), pdone, sdone)
    for ver, rtype, rid, content, _plen, off in split_fcgi_records(data):
        if ver != 1:
            raise DecodeError("bad version %d at offset %d" % (ver, off))
        if rid == 0:
            continue  # management record (GET_VALUES etc.): not part of the expect format
        if rtype == FCGI_BEGIN_REQUEST:
            role, flags = struct.unpack_from(">HB", content, 0)
            reqs[rid] = {"role": role, "keep": 1 if flags & FCGI_KEEP_CONN else 0,
                         "params": bytearray(), "stdin": bytearray()}
        elif rtype == FCGI_PARAMS:
            r = reqs[rid]
            if content:
                r["params"] += content
            else:
                lines += request_lines(rid, r["role"], r["keep"],
                                       decode_fcgi_pairs(bytes(r["params"])))
        elif rtype == FCGI_STDIN:
            r = reqs[rid]
            if content:
                r["stdin"] += content
            else:
                lines.append(stdin_line(rid, bytes(r["stdin"])))
                del reqs[rid]
        elif rtype == FCGI_ABORT_REQUEST:
            lines.append("abort %d" % rid)
        # DATA (filter role) is ignored
    return lines


def parse_scgi_header(data):
    """Return (pairs, body_offset) or None if the header is not complete yet."""
    colon = data.find(b":")
    if colon < 0:
        if len(data) > 20:
            raise DecodeError("no netstring length")
        return None
    digits = data[:colon]
    if not digits.isdigit():
        raise DecodeError("bad netstring length %r" % digits)
    hlen = int(digits)
    end = colon + 1 + hlen
    if len(data) < end + 1:
        return None
    if data[end:end + 1] != b",":
        raise DecodeError("netstring not terminated by ','")
    items = data[colon + 1:end].split(b"\0")
    if items[-1] != b"":
        raise DecodeError("header block does not end in NUL")
    items = items[:-1]
    if len(items) % 2:
        raise DecodeError("odd number of header strings")
    pairs = list(zip(items[0::2], items[1::2]))
    return pairs, end + 1


def scgi_content_length(pairs):
    for n, v in pairs:
        if n == b"CONTENT_LENGTH":
            return int(v)
    raise DecodeError("no CONTENT_LENGTH")


def decode_scgi(data):
    parsed = parse_scgi_header(data)
    if parsed is None:
        raise DecodeError("incomplete SCGI header")
    pairs, off = parsed
    clen = scgi_content_length(pairs)
    body = data[off:off + clen]
    if len(body) != clen:
        raise DecodeError("truncated SCGI body")
    lines = request_lines(0, 1, 0, pairs)
    lines.append(stdin_line(0, body))
    if len(data) > off + clen:
        lines.append("trailing %d" % (len(data) - off - clen))
    return lines


def parse_uwsgi_packet(data):
    """Return (modifier1, modifier2, pairs, body_offset), or None if incomplete."""
    if len(data) < 4:
        return None
    mod1, size, mod2 = struct.unpack_from("<BHB", data, 0)
    end = 4 + size
    if len(data) < end:
        return None
    pairs = []
    pos = 4
    while pos < end:
        if pos + 2 > end:
            raise DecodeError("truncated key length at offset %d" % pos)
        (klen,) = struct.unpack_from("<H", data, pos)
        key = data[pos + 2:pos + 2 + klen]
        pos += 2 + klen
        if pos + 2 > end:
            raise DecodeError("truncated value length at offset %d" % pos)
        (vlen,) = struct.unpack_from("<H", data, pos)
        value = data[pos + 2:pos + 2 + vlen]
        pos += 2 + vlen
        if pos > end:
            raise DecodeError("var runs past the packet at offset %d" % pos)
        pairs.append((key, value))
    return mod1, mod2, pairs, end


def uwsgi_content_length(pairs):
    values = [v for n, v in pairs if n == b"CONTENT_LENGTH"]
    if len(values) > 1:
        raise DecodeError("CONTENT_LENGTH repeated")
    return int(values[0]) if values and values[0] else 0


def decode_uwsgi(data):
    parsed = parse_uwsgi_packet(data)
    if parsed is None:
        raise DecodeError("incomplete uwsgi packet")
    mod1, mod2, pairs, off = parsed
    if (mod1, mod2) != (0, 0):
        raise DecodeError("modifiers %d/%d" % (mod1, mod2))
    clen = uwsgi_content_length(pairs)
    body = data[off:off + clen]
    if len(body) != clen:
        raise DecodeError("truncated uwsgi body")
    lines = request_lines(0, 1, 0, pairs)
    lines.append(stdin_line(0, body))
    if len(data) > off + clen:
        lines.append("trailing %d" % (len(data) - off - clen))
    return lines


def decode(mode, data):
    return {"fcgi": decode_fcgi, "scgi": decode_scgi, "uwsgi": decode_uwsgi}[mode](data)


# ---------------------------------------------------------------- live server

class Conn:
    def __init__(self, sock, mode, path_bin, path_expect):
        self.sock = sock
        self.mode = mode
        self.path_bin = path_bin
        self.path_expect = path_expect
        self.data = bytearray()
        self.f = open(path_bin, "wb")

    def record(self, chunk):
        self.data += chunk
        self.f.write(chunk)
        self.f.flush()

    def finish(self):
        self.f.close()
        try:
            lines = decode(self.mode, bytes(self.data))
            text = "".join(l + "\n" for l in lines)
        except DecodeError as e:
            text = "decode-error %s\n" % e
            log("%s: decode error: %s" % (self.path_bin, e))
        with open(self.path_expect, "w") as f:
            f.write(text)
        log("%s: %d bytes, connection closed" % (self.path_bin, len(self.data)))

    # -- fcgi: a small incremental parser that only looks at what it must
    def run_fcgi(self):
        buf = bytearray()
        keep = {}
        while True:
            chunk = self.sock.recv(65536)
            if not chunk:
                return
            self.record(chunk)
            buf += chunk
            while len(buf) >= 8:
                _v, rtype, rid, clen, plen, _r = struct.unpack_from(">BBHHBB", buf, 0)
                if len(buf) < 8 + clen + plen:
                    break
                content = bytes(buf[8:8 + clen])
                del buf[:8 + clen + plen]
                if rtype == FCGI_BEGIN_REQUEST:
                    keep[rid] = bool(content[2] & FCGI_KEEP_CONN)
                elif rtype == FCGI_GET_VALUES:
                    self.sock.sendall(fcgi_record(FCGI_GET_VALUES_RESULT, 0))
                elif rtype == FCGI_STDIN and clen == 0:
                    self.sock.sendall(fcgi_reply(rid))
                    if not keep.pop(rid, False):
                        return
                elif rtype == FCGI_ABORT_REQUEST:
                    self.sock.sendall(fcgi_record(FCGI_END_REQUEST, rid,
                                                  struct.pack(">IB3x", 0, 0)))
                    if not keep.pop(rid, False):
                        return

    def run_scgi(self):
        while True:
            parsed = parse_scgi_header(bytes(self.data))
            if parsed is not None:
                pairs, off = parsed
                need = off + scgi_content_length(pairs)
                if len(self.data) >= need:
                    break
            chunk = self.sock.recv(65536)
            if not chunk:
                return
            self.record(chunk)
        self.sock.sendall(RESPONSE)

    def run_uwsgi(self):
        while True:
            parsed = parse_uwsgi_packet(bytes(self.data))
            if parsed is not None:
                need = parsed[3] + uwsgi_content_length(parsed[2])
                if len(self.data) >= need:
                    break
            chunk = self.sock.recv(65536)
            if not chunk:
                return
            self.record(chunk)
        self.sock.sendall(HTTP_RESPONSE)
        # Anything the web server sends past what it announced is recorded too.
        self.sock.shutdown(socket.SHUT_WR)
        self.sock.settimeout(1.0)
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return
                self.record(chunk)
        except socket.timeout:
            pass

    def run(self):
        try:
            if self.mode == "fcgi":
                self.run_fcgi()
            elif self.mode == "uwsgi":
                self.run_uwsgi()
            else:
                self.run_scgi()
        except Exception as e:  # keep the capture even on surprises
            log("%s: error: %r" % (self.path_bin, e))
        finally:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            self.finish()


def log(msg):
    sys.stderr.write("capture.py: %s\n" % msg)
    sys.stderr.flush()


def serve(outdir, specs):
    counts = {}
    lock = threading.Lock()

    def accept_loop(lsock, mode, name):
        while True:
            sock, _addr = lsock.accept()
            with lock:
                n = counts.get(name, 0) + 1
                counts[name] = n
            base = name if n == 1 else "%s.conn%d" % (name, n)
            c = Conn(sock, mode, os.path.join(outdir, base + ".bin"),
                     os.path.join(outdir, base + ".expect"))
            log("%s: connection %d accepted" % (name, n))
            threading.Thread(target=c.run, daemon=True).start()

    for spec in specs:
        mode, port, name = spec.split(":", 2)
        if mode not in ("fcgi", "scgi", "uwsgi"):
            raise SystemExit("bad mode %r" % mode)
        lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lsock.bind(("127.0.0.1", int(port)))
        lsock.listen(16)
        threading.Thread(target=accept_loop, args=(lsock, mode, name), daemon=True).start()
        log("listening on 127.0.0.1:%s (%s) -> %s.bin" % (port, mode, name))

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print("ready", flush=True)
    while not stop.wait(0.2):
        pass


def main(argv):
    if len(argv) >= 3 and argv[1] == "serve":
        serve(argv[2], argv[3:])
    elif len(argv) == 4 and argv[1] == "decode":
        with open(argv[3], "rb") as f:
            sys.stdout.write("".join(l + "\n" for l in decode(argv[2], f.read())))
    elif len(argv) == 3 and argv[1] == "records":
        with open(argv[2], "rb") as f:
            data = f.read()
        for ver, rtype, rid, content, plen, off in split_fcgi_records(data):
            print("off=%d ver=%d type=%s id=%d clen=%d plen=%d"
                  % (off, ver, TYPE_NAMES.get(rtype, rtype), rid, len(content), plen))
    else:
        sys.stderr.write(__doc__)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
