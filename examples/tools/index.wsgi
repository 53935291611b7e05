# /tools/ (the directory mount's index): lists the tools.
import os

import toolstate

HERE = os.path.dirname(os.path.abspath(__file__))


def application(environ, start_response):
    names = sorted(n[:-len('.wsgi')] for n in os.listdir(HERE)
                   if n.endswith('.wsgi') and not n.startswith(('.', 'index.')))
    body = ('tools: %s\nrequests to tools so far: %d\n'
            % (' '.join(names), toolstate.count())).encode()
    start_response('200 OK', [('Content-Type', 'text/plain; charset=utf-8'),
                              ('Content-Length', str(len(body)))])
    return [body]
