# The legacy shop (mounted at /legacy by ../gateway.toml, with the venv venvs/legacy).
import sys

import shopkit


def application(environ, start_response):
    body = ('legacy shop on shopkit %s\nsys.prefix: %s\npath: %s\n'
            % (shopkit.__version__, sys.prefix, environ['PATH_INFO'])).encode()
    start_response('200 OK', [('Content-Type', 'text/plain; charset=utf-8'),
                              ('Content-Length', str(len(body)))])
    return [body]
