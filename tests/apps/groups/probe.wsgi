# Test app for tests/groups.rs: reports what its interpreter sees, one `KEY=value` line each.
#
#   ?set=X     stores X in groupstate.value (a module every app of one interpreter shares;
#              found through python-path)
#   ?print=M   print()s `probe-print M` (it must reach the gateway's log)
#   ?thread=1  computes in a thread that the request starts and joins
import importlib.util
import os
import sys
import threading
from urllib.parse import parse_qs

try:
    from _xxsubinterpreters import get_current as _get_current
except ImportError:  # Python 3.13 renamed it; its get_current() returns (id, whence)
    from _interpreters import get_current as _get_current


def interpreter_id():
    current = _get_current()
    return str(current[0] if isinstance(current, tuple) else current)


try:
    import groupstate
except ImportError:
    groupstate = None

COUNTER = 0
INTERPRETER = interpreter_id()


def version(name):
    """(version, file) of an importable module, or ('missing', '')."""
    try:
        module = __import__(name)
    except ImportError:
        return 'missing', ''
    return getattr(module, '__version__', '?'), getattr(module, '__file__', '')


def find(name):
    """Where `name` would be imported from (without importing it), or 'missing'."""
    spec = importlib.util.find_spec(name)
    return spec.origin if spec is not None else 'missing'


def in_thread():
    out = {}

    def work():
        out['interpreter'] = interpreter_id()
        out['sum'] = sum(range(1000))

    t = threading.Thread(target=work, name='probe-worker')
    t.start()
    t.join(10)
    return '%s in interpreter %s, alive after join: %s' % (
        out.get('sum'), out.get('interpreter'), t.is_alive())


def application(environ, start_response):
    global COUNTER
    COUNTER += 1
    q = {k: v[-1] for k, v in parse_qs(environ.get('QUERY_STRING', '')).items()}
    if 'set' in q and groupstate is not None:
        groupstate.value = q['set']
    if 'print' in q:
        print('probe-print', q['print'])
    six_version, six_file = version('six')
    fields = [
        ('script', os.path.basename(__file__)),
        ('SCRIPT_NAME', environ['SCRIPT_NAME']),
        ('PATH_INFO', environ['PATH_INFO']),
        ('interpreter', INTERPRETER),
        ('argv', repr(sys.argv)),
        ('prefix', sys.prefix),
        ('six', six_version),
        ('six_file', six_file),
        ('flask', find('flask')),
        ('counter', COUNTER),
        ('value', 'no-groupstate' if groupstate is None else groupstate.value),
        ('thread', in_thread() if q.get('thread') else ''),
    ]
    body = ''.join('%s=%s\n' % kv for kv in fields).encode('utf-8')
    start_response('200 OK', [('Content-Type', 'text/plain; charset=utf-8'),
                              ('Content-Length', str(len(body)))])
    return [body]
