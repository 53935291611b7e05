# Fails at import the way a C extension that refuses sub-interpreters does (CPython's
# single-phase-init check): the gateway must hint at application-group = "%{GLOBAL}" when this
# happens in a sub-interpreter, and not in the main interpreter.
raise ImportError('module x does not support loading in subinterpreters')


def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'unreachable\n']
