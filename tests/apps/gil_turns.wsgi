# Requests of a few milliseconds of Python that never let go of the GIL by themselves (the
# switch interval is 5 s); each answers the order in which it finished.
import itertools
import sys
import time

sys.setswitchinterval(5.0)
finished = itertools.count()


def application(environ, start_response):
    end = time.perf_counter() + 0.002
    while time.perf_counter() < end:
        pass
    n = next(finished)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [str(n).encode()]
