# A script that fails to import: its mount answers 500, other mounts keep serving.
import this_module_does_not_exist  # noqa: F401

def application(environ, start_response):
    start_response('200 OK', [])
    return [b'unreachable']
