# 1 MiB yielded by a generator in 16 chunks of 64 KiB; chunk i is 65536 copies of
# the byte ord("a") + i, so a lost, repeated or reordered chunk changes the body.
# bench/run builds the same body to check it. Content-Length is declared so that
# every backend can keep the client connection open.
CHUNK_SIZE = 65536
CHUNKS = [bytes([0x61 + i]) * CHUNK_SIZE for i in range(16)]
HEADERS = [("Content-Type", "application/octet-stream"),
           ("Content-Length", str(CHUNK_SIZE * len(CHUNKS)))]


def application(environ, start_response):
    start_response("200 OK", list(HEADERS))
    for chunk in CHUNKS:
        yield chunk
