# Imports a standard-library extension module that an interpreter with its own GIL refuses.
import readline  # noqa: F401


def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'imported\n']
