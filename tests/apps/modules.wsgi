# Which of WATCHED the app's interpreter holds when the app imports nothing: the gateway's own
# code must not load them into every interpreter (see tests/wsgi.rs).
import sys

WATCHED = ('traceback', 'threading', 're', 'html', 'importlib.util', 'contextlib', 'tokenize',
           'hashlib', 'enum', 'functools')


def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [' '.join(m for m in WATCHED if m in sys.modules).encode()]
