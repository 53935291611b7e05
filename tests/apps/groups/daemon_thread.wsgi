# Starts a daemon thread at import that never ends (a heartbeat, a metrics pusher, an error
# reporter's transport: common in real applications). The gateway must still stop cleanly.
import threading
import time


def _beat():
    while True:
        time.sleep(0.05)


threading.Thread(target=_beat, name='heartbeat', daemon=True).start()


def application(environ, start_response):
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [b'beating\n']
