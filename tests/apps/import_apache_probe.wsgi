# Test app for tests/import_apache.rs, copied under several names and mounted several times:
# answers what its request and its interpreter look like, one `KEY=value` line each.
#
#   ?set=X        stores X in state.value (a module shared by every app of one interpreter)
#   ?status=N     answers status N
#   ?redirect=U   answers 302 to U
#
# `grouplib` comes from the process group's python-path and names the group; the callable
# `handler` is the same app under another name (WSGICallableObject).
import hashlib
from urllib.parse import parse_qs

import grouplib
import state


def respond(environ, start_response, name):
    q = {k: v[-1] for k, v in parse_qs(environ.get('QUERY_STRING', '')).items()}
    if 'set' in q:
        state.value = q['set']
    if 'status' in q:
        start_response(q['status'] + ' Custom', [('Content-Type', 'text/plain'),
                                                 ('X-Probe', name)])
        return [b'status ' + q['status'].encode()]
    if 'redirect' in q:
        start_response('302 Found', [('Location', q['redirect']),
                                     ('Content-Type', 'text/plain')])
        return [b'moved']
    data = environ['wsgi.input'].read()
    fields = [
        ('app', name),
        ('group', grouplib.NAME),
        ('SCRIPT_NAME', environ['SCRIPT_NAME']),
        ('PATH_INFO', environ['PATH_INFO']),
        ('QUERY_STRING', environ.get('QUERY_STRING', '')),
        ('REQUEST_METHOD', environ['REQUEST_METHOD']),
        ('body', '%d %s' % (len(data), hashlib.sha256(data).hexdigest())),
        ('authorization', environ.get('HTTP_AUTHORIZATION', '(none)')),
        ('state', state.value),
    ]
    body = ''.join('%s=%s\n' % kv for kv in fields).encode('utf-8')
    start_response('200 OK', [('Content-Type', 'text/plain; charset=utf-8'),
                              ('X-Probe', name),
                              ('Set-Cookie', 'probe=%s; Path=/' % name)])
    return [body]


def application(environ, start_response):
    return respond(environ, start_response, __file__.rsplit('/', 1)[-1])


def handler(environ, start_response):
    return respond(environ, start_response, 'handler')
