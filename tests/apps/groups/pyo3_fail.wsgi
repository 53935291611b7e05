# Fails at import the way a PyO3 extension module does when a second interpreter imports it.
raise ImportError('PyO3 modules may only be initialized once per interpreter process')


def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'unreachable\n']
