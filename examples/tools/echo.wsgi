# /tools/echo/...: what the gateway derived for this request.
import toolstate


def application(environ, start_response):
    toolstate.count(add=1)
    body = ('SCRIPT_NAME=%s\nPATH_INFO=%s\nQUERY_STRING=%s\n'
            % (environ['SCRIPT_NAME'], environ['PATH_INFO'], environ['QUERY_STRING'])).encode()
    start_response('200 OK', [('Content-Type', 'text/plain; charset=utf-8'),
                              ('Content-Length', str(len(body)))])
    return [body]
