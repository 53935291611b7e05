# Of the worker processes that import this app at the same time, the first takes the lock
# file named by SLOW_START (PATH:SECONDS) and sleeps that long before it is done: with
# --preload, it serves that much later than the others. Answers with its pid.
import fcntl
import json
import os
import time

_path, _seconds = os.environ['SLOW_START'].rsplit(':', 1)
_lock = open(_path, 'a')
try:
    fcntl.flock(_lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    time.sleep(float(_seconds))
except BlockingIOError:
    pass


def application(environ, start_response):
    body = json.dumps({'pid': os.getpid()}).encode()
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', str(len(body)))])
    return [body]
