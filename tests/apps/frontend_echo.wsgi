# Test app for the front-end tests (nginx, lighttpd, Apache in front of the gateway).
#
#   /big?mib=N   N MiB of deterministic bytes, yielded in 64 KiB chunks: chunk i is
#                sha256(b'%d' % i) repeated 2048 times (the test computes the same).
#   /unread?kib=N  answers N KiB (byte i is i % 251) without reading the request body (a
#                redirect after a POST, an early 401, a webhook acknowledged at once).
#   anything     reads the whole body and answers `KEY=value` lines: the request's
#                SCRIPT_NAME, PATH_INFO, method, query, body length and sha256, some headers.
import hashlib
import os
from urllib.parse import parse_qs

CHUNK_REPEAT = 2048  # 32-byte digest * 2048 = 64 KiB


def big(environ, start_response):
    q = parse_qs(environ.get('QUERY_STRING', ''))
    mib = int(q.get('mib', ['1'])[0])
    chunks = mib * 16
    start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                              ('Content-Length', str(chunks * 65536))])

    def gen():
        for i in range(chunks):
            yield hashlib.sha256(b'%d' % i).digest() * CHUNK_REPEAT
    return gen()


def unread(environ, start_response):
    q = parse_qs(environ.get('QUERY_STRING', ''))
    n = int(q.get('kib', ['64'])[0]) * 1024
    body = bytes(i % 251 for i in range(251)) * (n // 251 + 1)
    start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                              ('Content-Length', str(n))])
    return [body[:n]]


def application(environ, start_response):
    if environ['PATH_INFO'] == '/big':
        return big(environ, start_response)
    if environ['PATH_INFO'] == '/unread':
        return unread(environ, start_response)
    h = hashlib.sha256()
    n = 0
    inp = environ['wsgi.input']
    while True:
        block = inp.read(65536)
        if not block:
            break
        h.update(block)
        n += len(block)
    fields = [
        ('SCRIPT_NAME', environ['SCRIPT_NAME']),
        ('PATH_INFO', environ['PATH_INFO']),
        ('REQUEST_METHOD', environ['REQUEST_METHOD']),
        ('QUERY_STRING', environ.get('QUERY_STRING', '')),
        ('CONTENT_TYPE', environ.get('CONTENT_TYPE', '')),
        ('BODY_LENGTH', n),
        ('BODY_SHA256', h.hexdigest()),
        ('HTTP_HOST', environ.get('HTTP_HOST', '')),
        ('HTTP_X_TEST', environ.get('HTTP_X_TEST', '')),
        ('HTTP_X_FORWARDED_FOR', environ.get('HTTP_X_FORWARDED_FOR', '')),
        ('HTTP_AUTHORIZATION', environ.get('HTTP_AUTHORIZATION', '')),
        ('PID', os.getpid()),
    ]
    body = ''.join('%s=%s\n' % (k, v) for k, v in fields).encode('utf-8')
    start_response('200 OK', [('Content-Type', 'text/plain; charset=utf-8'),
                              ('Content-Length', str(len(body)))])
    return [body]
