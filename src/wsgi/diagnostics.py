# The built-in diagnostics app, served when no script is given: it shows what the web server
# sent, the environ an app would see and how SCRIPT_NAME / PATH_INFO were derived.
import html
import sys


def _rows(pairs):
    return ''.join('<tr><th>%s</th><td><code>%s</code></td></tr>\n'
                   % (html.escape(str(k)), html.escape(repr(v))) for k, v in pairs)


def application(environ, start_response):
    params = environ.get('wsgi_gateway.params', [])
    route = environ.get('wsgi_gateway.route', '')
    sent = dict(params)
    accept = environ.get('HTTP_ACCEPT', '')
    if 'text/html' not in accept:
        lines = ['wsgi-gateway diagnostics', '',
                 'SCRIPT_NAME=%r PATH_INFO=%r (%s)' % (environ['SCRIPT_NAME'], environ['PATH_INFO'], route),
                 '', 'params sent by the web server:']
        lines += ['  %s=%r' % (k, v) for k, v in params]
        lines += ['', 'environ:']
        lines += ['  %s=%r' % (k, environ[k]) for k in sorted(environ) if not k.startswith('wsgi_gateway.')]
        body = ('\n'.join(lines) + '\n').encode('utf-8')
        start_response('200 OK', [('Content-Type', 'text/plain; charset=utf-8'),
                                  ('Content-Length', str(len(body)))])
        return [body]
    notes = []
    if 'SCRIPT_NAME' in sent and 'PATH_INFO' not in sent:
        notes.append('The web server sent SCRIPT_NAME but no PATH_INFO (nginx\'s stock '
                     'fastcgi_params do this); the gateway derived both from REQUEST_URI and the mount.')
    if 'REQUEST_URI' not in sent:
        notes.append('No REQUEST_URI was sent: the path came from %s.' % html.escape(route))
    if 'HTTP_AUTHORIZATION' not in sent:
        notes.append('No Authorization header arrived (Apache drops it unless CGIPassAuth On).')
    page = ['<!DOCTYPE html><html><head><meta charset="utf-8"><title>wsgi-gateway diagnostics</title>',
            '<style>body{font-family:sans-serif}th{text-align:left;vertical-align:top;padding-right:1em}'
            'code{word-break:break-all}</style></head><body>',
            '<h1>wsgi-gateway diagnostics</h1>',
            '<p>Python %s. SCRIPT_NAME <code>%s</code>, PATH_INFO <code>%s</code>, derived from %s.</p>'
            % (html.escape(sys.version.split()[0]), html.escape(repr(environ['SCRIPT_NAME'])),
               html.escape(repr(environ['PATH_INFO'])), html.escape(route))]
    page += ['<p>%s</p>' % n for n in notes]
    page += ['<h2>Params sent by the web server</h2><table>', _rows(params), '</table>',
             '<h2>The WSGI environ</h2><table>',
             _rows((k, environ[k]) for k in sorted(environ) if not k.startswith('wsgi_gateway.')),
             '</table></body></html>\n']
    body = ''.join(page).encode('utf-8')
    start_response('200 OK', [('Content-Type', 'text/html; charset=utf-8'),
                              ('Content-Length', str(len(body)))])
    return [body]
