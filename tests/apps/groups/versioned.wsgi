# Test app for the reload tests in tests/groups.rs, which copy it and rewrite VERSION.
#
#   ?wait=PATH  prints `versioned-started SCRIPT_NAME VERSION`, then waits (up to 30 s) until
#               the file PATH exists before answering: a request in flight while the script
#               changes
#
# `imports` counts how often this file was imported in this interpreter (kept on `sys`, so a
# re-import in the same interpreter counts 2, a new interpreter starts again at 1).
import os
import sys
import time
from urllib.parse import parse_qs

try:
    from _xxsubinterpreters import get_current as _get_current
except ImportError:  # Python 3.13 renamed it; its get_current() returns (id, whence)
    from _interpreters import get_current as _get_current


def interpreter_id():
    current = _get_current()
    return str(current[0] if isinstance(current, tuple) else current)


VERSION = 'v1'
COUNTER = 0
_imports = sys.__dict__.setdefault('versioned_imports', {})
_imports[__file__] = _imports.get(__file__, 0) + 1
IMPORTS = _imports[__file__]
INTERPRETER = interpreter_id()


def application(environ, start_response):
    global COUNTER
    COUNTER += 1
    wait = parse_qs(environ.get('QUERY_STRING', '')).get('wait')
    if wait:
        print('versioned-started', environ['SCRIPT_NAME'], VERSION)
        deadline = time.monotonic() + 30
        while not os.path.exists(wait[0]) and time.monotonic() < deadline:
            time.sleep(0.02)
    body = ('version=%s\ncounter=%d\nimports=%d\ninterpreter=%s\n'
            % (VERSION, COUNTER, IMPORTS, INTERPRETER)).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]
