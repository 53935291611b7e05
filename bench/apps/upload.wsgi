# Reads the whole request body (wsgi.input, up to CONTENT_LENGTH, in 64 KiB reads) and
# answers with its length and CRC-32, e.g. `len=1048576 crc=123456789`: bench/run POSTs
# the same 1 MiB to it and checks the answer exactly.
import zlib

READ_SIZE = 65536


def application(environ, start_response):
    stream = environ["wsgi.input"]
    left = int(environ.get("CONTENT_LENGTH") or 0)
    length = crc = 0
    while left > 0:
        chunk = stream.read(min(READ_SIZE, left))
        if not chunk:
            break
        length += len(chunk)
        left -= len(chunk)
        crc = zlib.crc32(chunk, crc)
    body = b"len=%d crc=%d" % (length, crc)
    start_response("200 OK", [("Content-Type", "text/plain"),
                              ("Content-Length", str(len(body)))])
    return [body]
