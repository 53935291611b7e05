# Which of the modules named in the query string (`a,b,c`) the app's interpreter holds,
# `,`-separated. It imports nothing itself beyond sys (see tests/groups.rs).
import sys


def application(environ, start_response):
    names = environ.get('QUERY_STRING', '').split(',')
    start_response('200 OK', [('Content-Type', 'text/plain')])
    return [','.join(m for m in names if m in sys.modules).encode()]
