# A Flask app mounted twice, each mount in its own interpreter. /meet proves that the two
# interpreters run Python at the same time: each request spins in pure Python (it never lets go
# of its GIL: the switch interval is set far beyond the test's bounds) and counts in a shared
# memory map, until it has seen the other request's counter move while it held its own GIL
# and the other has seen it too. With one GIL for both, the other cannot move meanwhile.
# /spin is a CPU-bound request through Flask.
import datetime
import decimal
import mmap
import struct
import sys
import threading
import time

import flask

sys.setswitchinterval(60.0)

app = flask.Flask(__name__)
application = app

COUNTER, SAW = 0, 16  # offsets: counters of slots 0 and 1, then their "saw the other" flags


@app.route('/meet')
def meet():
    me = int(flask.request.args['me'])
    other = 1 - me
    bound = float(flask.request.args['bound'])
    with open(flask.request.args['shm'], 'r+b') as f:
        shm = mmap.mmap(f.fileno(), 32)
    try:
        deadline = time.monotonic() + bound
        n = 0
        first_seen = None
        advanced = 0
        while time.monotonic() < deadline:
            n += 1
            struct.pack_into('q', shm, COUNTER + 8 * me, n)
            theirs = struct.unpack_from('q', shm, COUNTER + 8 * other)[0]
            if theirs:
                if first_seen is None:
                    first_seen = theirs
                advanced = theirs - first_seen
                if advanced >= 1000:
                    struct.pack_into('q', shm, SAW + 8 * me, 1)
            if (struct.unpack_from('q', shm, SAW)[0]
                    and struct.unpack_from('q', shm, SAW + 8)[0]):
                break
        return flask.jsonify(me=me, spins=n, other_advanced=advanced,
                             saw_other=bool(struct.unpack_from('q', shm, SAW + 8 * me)[0]),
                             both=bool(struct.unpack_from('q', shm, SAW)[0]
                                       and struct.unpack_from('q', shm, SAW + 8)[0]),
                             gil_interval=sys.getswitchinterval())
    finally:
        shm.close()


@app.route('/spin')
def spin():
    n = 0
    for i in range(int(flask.request.args.get('n', '100000'))):
        n += i * i % 7
    return flask.jsonify(n=n, thread=threading.get_ident(),
                         now=datetime.datetime.now().isoformat(),
                         third=str(decimal.Decimal(1) / 3))

