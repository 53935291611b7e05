# Imports the standard-library modules whose C parts broke own-GIL interpreters (datetime and
# decimal on 3.12.1 and 3.13.0, OpenSSL through hashlib and ssl on 3.12.1) and uses them.
import datetime
import decimal
import hashlib
import json
import ssl


def application(environ, start_response):
    body = json.dumps({
        'now': datetime.datetime.now().isoformat(),
        'third': str(decimal.Decimal(1) / 3),
        'sha1': hashlib.sha1(b'own-gil').hexdigest(),
        'openssl': ssl.OPENSSL_VERSION,
    }).encode()
    start_response('200 OK', [('Content-Type', 'application/json'),
                              ('Content-Length', str(len(body)))])
    return [body]
