# Test app for the gateway's PEP 3333 behaviour: one route per behaviour, by PATH_INFO.
import hashlib
import json
import os
import sys
import threading
import time
from urllib.parse import parse_qs
from wsgiref.validate import validator

STATE = {'hits': 0}


def query(environ):
    return {k: v[0] for k, v in parse_qs(environ.get('QUERY_STRING', '')).items()}


def reply(start_response, body, status='200 OK', ctype='application/json'):
    if not isinstance(body, bytes):
        body = json.dumps(body).encode()
    start_response(status, [('Content-Type', ctype), ('Content-Length', str(len(body)))])
    return [body]


class Closing:
    def __init__(self, chunks, marker):
        self.chunks = chunks
        self.marker = marker

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        with open(self.marker, 'w') as f:
            f.write('closed')


class SpinningClose:
    """A response whose close() is busy for `ms` milliseconds (Python bytecode all along, so
    an interrupt would land), saying so in the marker file: `closing`, then `closed`."""

    def __init__(self, chunks, marker, ms):
        self.chunks = chunks
        self.marker = marker
        self.ms = ms

    def __iter__(self):
        return iter(self.chunks)

    def close(self):
        with open(self.marker, 'w') as f:
            f.write('closing')
        deadline = time.monotonic() + self.ms / 1000
        while time.monotonic() < deadline:
            try:
                pass
            except Exception:
                pass
        with open(self.marker, 'w') as f:
            f.write('closed')


def slow_chunks(n, delay):
    for i in range(n):
        yield b'chunk %d\n' % i
        time.sleep(delay)


def hello(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'Hello, world!\n']


VALIDATED = validator(hello)


def application(environ, start_response):
    path = environ['PATH_INFO']
    q = query(environ)
    if path.startswith('/echo'):
        keys = ['REQUEST_METHOD', 'SCRIPT_NAME', 'PATH_INFO', 'QUERY_STRING', 'CONTENT_TYPE',
                'CONTENT_LENGTH', 'SERVER_NAME', 'SERVER_PORT', 'SERVER_PROTOCOL',
                'wsgi.url_scheme', 'wsgi.input_terminated', 'wsgi.multithread',
                'wsgi.multiprocess', 'wsgi.run_once']
        out = {k: environ.get(k) for k in keys}
        out['wsgi.version'] = list(environ['wsgi.version'])
        out['http'] = {k: v for k, v in environ.items() if k.startswith('HTTP_')}
        out['types'] = sorted({type(v).__name__ for k, v in environ.items() if k.isupper()})
        out['sys.argv'] = sys.argv
        return reply(start_response, out)
    if path == '/upload':
        data = environ['wsgi.input'].read()
        return reply(start_response, {'length': len(data), 'sha256': hashlib.sha256(data).hexdigest()})
    if path == '/upload-chunked-reads':
        inp = environ['wsgi.input']
        h = hashlib.sha256()
        n = 0
        while True:
            block = inp.read(int(q.get('size', '1000')))
            if not block:
                break
            h.update(block)
            n += len(block)
        return reply(start_response, {'length': n, 'sha256': h.hexdigest()})
    if path == '/lines':
        inp = environ['wsgi.input']
        first = inp.readline()
        limited = inp.readline(3)
        rest_of_line = inp.readline()
        two = inp.readlines(1)
        remaining = [line for line in inp]
        return reply(start_response, {
            'first': first.decode(), 'limited': limited.decode(), 'rest': rest_of_line.decode(),
            'two': [x.decode() for x in two], 'remaining': [x.decode() for x in remaining],
            'eof': inp.read().decode()})
    if path == '/big':
        mb = int(q.get('mb', '1'))
        start_response('200 OK', [('Content-Type', 'application/octet-stream'),
                                  ('Content-Length', str(mb << 20))])
        return (bytes([i % 251]) * (1 << 20) for i in range(mb))
    if path == '/slow':
        time.sleep(int(q.get('ms', '100')) / 1000)
        return reply(start_response, {'thread': threading.get_ident()})
    if path == '/block':
        # Says it runs (the marker file), then takes `ms` milliseconds. With `read`, it reads
        # its body after `read` milliseconds of them.
        with open(q['marker'], 'w') as f:
            f.write('running')
        ms = int(q.get('ms', '1000'))
        if 'read' in q:
            time.sleep(int(q['read']) / 1000)
            environ['wsgi.input'].read()
            ms -= int(q['read'])
        time.sleep(max(ms, 0) / 1000)
        return reply(start_response, {'pid': os.getpid()})
    if path == '/gate':
        # Says it runs (the marker file), then waits for the file `go` (30 s at most).
        with open(q['marker'], 'w') as f:
            f.write('running')
        deadline = time.monotonic() + 30
        while not os.path.exists(q['go']) and time.monotonic() < deadline:
            time.sleep(0.005)
        return reply(start_response, {'pid': os.getpid()})
    if path == '/spin':
        # Busy for `ms` milliseconds (Python bytecode all along, so an interrupt lands);
        # `except Exception` must not swallow the gateway's interrupt, and `finally` runs.
        with open(q['marker'], 'w') as f:
            f.write('running')
        deadline = time.monotonic() + int(q.get('ms', '1000')) / 1000
        try:
            n = 0
            while time.monotonic() < deadline:
                try:
                    n += 1
                except Exception:
                    pass
            return reply(start_response, {'pid': os.getpid(), 'spun': n})
        finally:
            with open(q['marker'], 'w') as f:
                f.write('finally')
    if path == '/interrupt-class':
        import wsgi_gateway
        return reply(start_response, {
            'base': wsgi_gateway.RequestInterrupted.__mro__[1].__name__,
            'names': sorted(n for n in dir(wsgi_gateway) if not n.startswith('_')),
        })
    if path == '/stream':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return slow_chunks(int(q.get('n', '3')), float(q.get('delay', '1')))
    if path == '/write':
        write = start_response('200 OK', [('Content-Type', 'text/plain')])
        write(b'written ')
        write(b'directly ')
        return [b'then returned']
    if path == '/error-before':
        raise RuntimeError('boom before start_response')
    if path == '/error-no-traceback':
        # `traceback` cannot be imported (None in sys.modules fails every import of it), as
        # when its import fails at the worst moment: the gateway, which imports it at the
        # first error, still logs this one and answers 500.
        sys.modules['traceback'] = None
        raise RuntimeError('boom with no traceback module')
    if path == '/error-after':
        start_response('200 OK', [('Content-Type', 'text/plain')])

        def gen():
            yield b'partial'
            raise RuntimeError('boom after the first chunk')
        return gen()
    if path == '/exc-info':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        try:
            raise ValueError('handled')
        except ValueError:
            start_response('503 Service Unavailable', [('Content-Type', 'text/plain')], sys.exc_info())
        return [b'replaced']
    if path == '/start-response-edges':
        # start_response and write, called every way PEP 3333 allows (and some it does not).
        seen = {}
        start_response(status='200 OK', response_headers=[('Content-Type', 'text/plain')],
                       exc_info=None)
        try:
            start_response('200 OK', [])
        except AssertionError as e:
            seen['twice'] = str(e)
        try:
            start_response('200 OK', [], None, None)
        except TypeError:
            seen['four'] = 'TypeError'
        try:
            start_response('200 OK', [], colour='blue')
        except TypeError as e:
            seen['keyword'] = str(e)
        try:
            raise KeyError('early')
        except KeyError:
            # Not sent yet: the head is replaced, a custom header list goes through the
            # gateway's own checks.
            write = start_response('202 Accepted', [('X-Replaced', 'yes')], sys.exc_info())
        try:
            write('text')
        except Exception as e:
            seen['str'] = '%s: %s' % (type(e).__name__, e)
        write(bytearray(b'ba|'))
        write(memoryview(b'mv|'))
        write(b'')
        try:
            raise LookupError('late')
        except LookupError as e:
            try:
                start_response('500 Oops', [], sys.exc_info())
            except LookupError as again:
                seen['reraised'] = again is e and again.__traceback__ is not None
        return [json.dumps(seen).encode()]
    if path == '/close':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return Closing([b'a', b'b'], q['marker'])
    if path == '/close-slow':
        start_response('200 OK', [('Content-Type', 'text/plain')])
        return Closing(slow_chunks(200, 0.05), q['marker'])
    if path == '/close-spin':
        # A long stream (64 KiB chunks, as fast as they go) whose close() takes `ms`.
        start_response('200 OK', [('Content-Type', 'text/plain')])
        chunks = (b'x' * 65536 for _ in range(int(q.get('n', '10000'))))
        return SpinningClose(chunks, q['marker'], int(q.get('ms', '1000')))
    if path == '/sized-wait':
        # The whole Content-Length, then a wait for the client's go-ahead: a file it makes
        # once it has the response's end. Without it in 5 s, an error (the response was not
        # ended with its last byte, and is then cut off).
        body = b'complete'
        start_response('200 OK', [('Content-Type', 'text/plain'),
                                  ('Content-Length', str(len(body)))])

        def gen():
            # With `start`: the body waits for that file too.
            deadline = time.monotonic() + 5
            while 'start' in q and not os.path.exists(q['start']):
                if time.monotonic() > deadline:
                    raise RuntimeError('no start')
                time.sleep(0.01)
            yield body
            deadline = time.monotonic() + 5
            while not os.path.exists(q['go']):
                if time.monotonic() > deadline:
                    raise RuntimeError('no go-ahead: the response did not end')
                time.sleep(0.01)
        return Closing(gen(), q['marker'])
    if path == '/sized-then-error':
        body = b'complete'
        start_response('200 OK', [('Content-Type', 'text/plain'),
                                  ('Content-Length', str(len(body)))])

        def gen():
            yield body
            raise RuntimeError('boom after the whole body')
        return gen()
    if path == '/file':
        f = open(q['path'], 'rb')
        start_response('200 OK', [('Content-Type', 'application/octet-stream')])
        return environ['wsgi.file_wrapper'](f, 8192)
    if path == '/bad-status':
        start_response('OK', [])
        return [b'x']
    if path == '/bad-header':
        start_response('200 OK', [('X-Number', 5)])
        return [b'x']
    if path == '/bad-length':
        start_response('200 OK', [('Content-Length', '-5')])
        return [b'x']
    if path == '/hop-by-hop':
        start_response('200 OK', [('Connection', 'close')])
        return [b'x']
    if path == '/str-body':
        start_response('200 OK', [])
        return ['not bytes']
    if path == '/errors':
        environ['wsgi.errors'].write('a line for the log\n')
        print('to stderr via print', file=sys.stderr)
        return reply(start_response, b'ok', ctype='text/plain')
    if path == '/validated':
        return VALIDATED(environ, start_response)
    if path == '/content-length':
        start_response('200 OK', [('Content-Length', '5')])
        return [b'0123456789']
    if path == '/no-start':
        return [b'x']
    if path == '/count':
        STATE['hits'] += 1
        return reply(start_response, {'hits': STATE['hits'], 'pid': os.getpid()})
    return reply(start_response, b'no such test route\n', status='404 Not Found', ctype='text/plain')
