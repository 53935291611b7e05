# The main site (mounted at / in the main interpreter by ../gateway.toml).
def application(environ, start_response):
    body = ('main site\npath: %s\napplications: /shop/ /legacy/ /tools/\n'
            % environ['PATH_INFO']).encode()
    start_response('200 OK', [('Content-Type', 'text/plain; charset=utf-8'),
                              ('Content-Length', str(len(body)))])
    return [body]
