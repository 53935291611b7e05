# A CPU-bound request (about 2 ms of pure Python): shows whether more processes use more cores.
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)


def application(environ, start_response):
    body = b"fib=%d" % fib(18)
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
