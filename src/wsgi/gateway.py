# The Python half of the WSGI gateway, run once in each interpreter. The Rust half builds
# environ, calls the app with its own response object (start_response, write: a native type)
# and sends a one-item list itself; this module holds the rest of the request cycle of PEP
# 3333: iteration, close(), wsgi.file_wrapper, errors and their 500 page (`complete`),
# wsgi.input, wsgi.errors and the checks of a start_response() the Rust side did not make
# (`check_head`). _gw_send, _gw_recv, _gw_log(ctx, text, is_error), _gw_settle, _gw_sendfile and
# _gw_print are injected into this namespace before it runs.
# Only what every request cycle needs is imported here: this module runs in every interpreter
# (the main one and each sub-interpreter), and `traceback`, `threading`, `importlib.util` and
# `re` would bring about 1 MiB of modules into each of them whether its app uses them or not.
# Tracebacks are formatted by `_format_exc`, which imports `traceback` on the first error.
import os
import sys
import _thread
import importlib.machinery
try:
    # CPython's own SHA-1, for module names: `hashlib` would load OpenSSL (a few MiB of RSS per
    # worker) into every interpreter, whether its app uses it or not.
    from _sha1 import sha1 as _sha1
except ImportError:
    from hashlib import sha1 as _sha1
import io

HOP_BY_HOP = frozenset((
    'connection', 'keep-alive', 'proxy-authenticate', 'proxy-authorization',
    'te', 'trailers', 'transfer-encoding', 'upgrade',
))
CHUNK = 65536


class ClientDisconnected(OSError):
    """The web server closed the connection (client gone or request aborted)."""


class BodyTimeout(TimeoutError):
    """No request body byte came within the gateway's body-timeout."""


class InvalidResponse(Exception):
    """The application broke PEP 3333 (status, headers, body type)."""


class RequestInterrupted(BaseException):
    """Raised by the gateway in the thread running a request, at its next Python bytecode.
    A BaseException (like KeyboardInterrupt and SystemExit), so that the usual
    `except Exception:` handlers of an app do not swallow it; `finally` blocks, context
    managers and the response's close() run. Import it as `from wsgi_gateway import
    RequestInterrupted` to clean up on it; re-raise it after."""


class InterruptTimeout(RequestInterrupted):
    """The request ran past interrupt-timeout: the client gets 504 if no response began."""


class Cancelled(RequestInterrupted):
    """The client went away (cancel-on-disconnect): nobody reads the response any more."""


def _public_module():
    """`wsgi_gateway`, importable by apps in every interpreter: the exceptions above."""
    import types
    module = types.ModuleType('wsgi_gateway', 'What a WSGI app can import from wsgi-gateway.')
    module.RequestInterrupted = RequestInterrupted
    module.InterruptTimeout = InterruptTimeout
    module.Cancelled = Cancelled
    sys.modules.setdefault('wsgi_gateway', module)


_public_module()


class Input:
    """wsgi.input: the request body as it arrives. It holds one piece of the body at a time
    (as the gateway hands it over), so reads of any size cost linear time. The gateway makes
    it with no arguments and sets `_ctx` (no __init__ runs per request); the other state
    starts as these class attributes."""
    _ctx = None
    _buf = b''
    _pos = 0
    _eof = False

    def _recv(self, want, exact):
        try:
            data = _gw_recv(self._ctx, want, exact)
        except TimeoutError as e:
            raise BodyTimeout(str(e)) from None
        if data is None:
            raise ClientDisconnected('request body read failed: client disconnected')
        return data

    def _next(self, want):
        """Replaces the used-up buffer with the next piece of the body (up to `want` bytes,
        any amount for 0); False at the end of the body."""
        if self._eof:
            return False
        data = self._recv(want, False)
        self._pos = 0
        self._buf = data
        if not data:
            self._eof = True
            return False
        return True

    def _take(self, n):
        buf, pos = self._buf, self._pos
        if pos == 0 and n == len(buf):
            self._buf = b''
            return buf
        self._pos = pos + n
        return buf[pos:pos + n]

    def read(self, size=-1):
        parts = []
        if size is None or size < 0:
            if self._pos < len(self._buf):
                parts.append(self._take(len(self._buf) - self._pos))
            while self._next(0):
                parts.append(self._buf)
            self._buf = b''
        elif size > 0:
            avail = len(self._buf) - self._pos
            if avail >= size:
                return self._take(size)
            if avail:
                parts.append(self._take(avail))
                size -= avail
            self._buf = b''
            self._pos = 0
            if not self._eof:
                # The rest in one bytes object, read into by the gateway (as much as asked
                # for unless the body ends first).
                data = self._recv(size, True)
                if len(data) < size:
                    self._eof = True
                if data:
                    parts.append(data)
        if not parts:
            return b''
        return parts[0] if len(parts) == 1 else b''.join(parts)

    def read1(self, size=-1):
        if self._pos == len(self._buf) and not self._next(CHUNK if size is None or size < 0 else size):
            return b''
        avail = len(self._buf) - self._pos
        return self._take(avail if size is None or size < 0 or size > avail else size)

    def readline(self, size=-1):
        limit = -1 if size is None or size < 0 else size
        parts = []
        while limit != 0:
            avail = len(self._buf) - self._pos
            if avail == 0:
                if not self._next(CHUNK):
                    break
                avail = len(self._buf)
            n = avail if limit < 0 or avail < limit else limit
            nl = self._buf.find(b'\n', self._pos, self._pos + n)
            if nl >= 0:
                parts.append(self._take(nl + 1 - self._pos))
                break
            parts.append(self._take(n))
            if limit > 0:
                limit -= n
        return parts[0] if len(parts) == 1 else b''.join(parts)

    def readlines(self, hint=-1):
        lines = []
        total = 0
        while True:
            line = self.readline()
            if not line:
                return lines
            lines.append(line)
            total += len(line)
            if hint is not None and 0 < hint <= total:
                return lines

    def __iter__(self):
        return self

    def __next__(self):
        line = self.readline()
        if not line:
            raise StopIteration
        return line

    def readable(self):
        return True

    def close(self):
        pass


class Errors:
    """wsgi.errors: text to the gateway's log, one entry per line. Made as Input is."""
    _ctx = None
    _pending = ''

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError('wsgi.errors.write() takes str, not %s' % type(s).__name__)
        self._pending += s
        if '\n' in self._pending:
            lines, _, self._pending = self._pending.rpartition('\n')
            _gw_log(self._ctx, lines, False)
        return len(s)

    def writelines(self, seq):
        for s in seq:
            self.write(s)

    def flush(self):
        if self._pending:
            _gw_log(self._ctx, self._pending, False)
            self._pending = ''


class LogStream(io.TextIOBase):
    """sys.stdout and sys.stderr: whole lines to the gateway's log, with the context of the
    request the thread runs (as wsgi.errors), or on their own outside a request."""

    def __init__(self):
        # The partial line of each thread.
        self._pending = _thread._local()
        self.buffer = LogBuffer(self)

    def writable(self):
        return True

    def write(self, s):
        if not isinstance(s, str):
            raise TypeError('write() argument must be str, not %s' % type(s).__name__)
        pending = getattr(self._pending, 'text', '') + s
        if '\n' in pending:
            lines, _, pending = pending.rpartition('\n')
            self._emit(lines)
        self._pending.text = pending
        return len(s)

    def flush(self):
        pending = getattr(self._pending, 'text', '')
        if pending:
            self._pending.text = ''
            self._emit(pending)

    def _emit(self, text):
        # With the context of the request this thread runs, if any (known to the gateway).
        _gw_print(text)

    def fileno(self):
        return 2

    def isatty(self):
        return False

    @property
    def encoding(self):
        return 'utf-8'


class LogBuffer:
    """sys.stdout.buffer and sys.stderr.buffer: bytes (UTF-8) to the same log."""

    def __init__(self, stream):
        self._stream = stream

    def writable(self):
        return True

    def write(self, b):
        self._stream.write(bytes(b).decode('utf-8', 'replace'))
        return len(b)

    def flush(self):
        self._stream.flush()


class FileWrapper:
    """wsgi.file_wrapper: a real file is streamed by the gateway without holding the GIL."""

    def __init__(self, filelike, blksize=8192):
        self.filelike = filelike
        self.blksize = blksize
        if hasattr(filelike, 'close'):
            self.close = filelike.close

    def __iter__(self):
        return self

    def __next__(self):
        data = self.filelike.read(self.blksize)
        if data:
            return data
        raise StopIteration

    def _fileno(self):
        try:
            fd = self.filelike.fileno()
            pos = self.filelike.tell()
            os.fstat(fd)
            return fd, pos
        except Exception:
            return None


# RFC 9110's tchar: a header name is one or more of these.
_TCHARS = "!#$%&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
_DIGITS = '0123456789'
_NONZERO = '123456789'


def _is_status(status):
    """Whether `status` is "NNN reason": three digits, the first not 0, a space, and a reason
    without line breaks (checked without `re`, which this module does not import)."""
    return (len(status) >= 4 and status[0] in _NONZERO and status[1] in _DIGITS
            and status[2] in _DIGITS and status[3] == ' '
            and '\r' not in status and '\n' not in status)


def _is_length(name):
    """Checks a header name (a token, not hop-by-hop); whether it is Content-Length."""
    # Stripping every tchar from both ends leaves nothing only when all of it is tchars.
    if name == '' or name.strip(_TCHARS) != '':
        raise InvalidResponse('invalid header name %r' % (name,))
    lname = name.lower()
    if lname in HOP_BY_HOP:
        raise InvalidResponse('hop-by-hop header %r is not allowed' % (name,))
    return lname == 'content-length'


def check_head(status, headers):
    """start_response()'s checks, for what the gateway's Rust side did not make itself (it
    makes the head of a plain str status and list of (str, str) tuples that is certainly
    valid): the head and its Content-Length (or None), or InvalidResponse saying what is
    wrong. The response object itself (start_response, write) is the gateway's."""
    if status.__class__ is not str:
        raise InvalidResponse('status must be str, not %s' % type(status).__name__)
    if not _is_status(status):
        raise InvalidResponse('status %r is not "NNN reason"' % (status,))
    if headers.__class__ is not list:
        raise InvalidResponse('headers must be a list, not %s' % type(headers).__name__)
    parts = ['Status: ', status, '\r\n']
    length = None
    for item in headers:
        if item.__class__ is not tuple or len(item) != 2:
            raise InvalidResponse('header %r is not a (name, value) tuple' % (item,))
        name, value = item
        if name.__class__ is not str or value.__class__ is not str:
            raise InvalidResponse('header %r: name and value must be str' % (item,))
        if _is_length(name):
            digits = value.strip()
            if not (digits.isascii() and digits.isdigit()):
                raise InvalidResponse('Content-Length %r is not a number' % value)
            length = int(digits)
        if '\n' in value or '\r' in value:
            raise InvalidResponse('header %s: value contains a line break' % name)
        parts += (name, ': ', value, '\r\n')
    parts.append('\r\n')
    try:
        head = ''.join(parts).encode('latin-1')
    except UnicodeEncodeError:
        raise InvalidResponse('status and headers must be latin-1 text') from None
    return head, length


LABEL = '%{GLOBAL}'
IS_SUB = False
# Import errors that mean "this extension cannot live in a sub-interpreter".
SUB_INTERPRETER_FAILURES = (
    'does not support loading in subinterpreters',
    'may only be initialized once per interpreter process',
    'is set to a wrong type',
    'interpreter change detected',
    'cannot be used in subinterpreters',
)


# Standard-library extension modules an interpreter with its own GIL must not load: on 3.12
# the single-phase-init ones (CPython refuses them, and on 3.12.1 running such a module's
# initialisation in a second own-GIL interpreter, to refuse it, corrupts the process); on 3.13
# those still single-phase, and _datetime, whose objects outlive their interpreter (a process
# whose own-GIL interpreters imported datetime crashes when they are ended). They are refused
# before they load: datetime, decimal and xml.etree fall back to their pure-Python versions.
REFUSED_STDLIB = {
    (3, 12): ('_datetime', '_decimal', '_elementtree', 'pyexpat', '_ctypes', '_lsprof',
              '_curses', '_curses_panel', 'readline', '_tkinter', 'nis', 'ossaudiodev'),
    (3, 13): ('_datetime', '_curses', '_curses_panel', 'readline', '_tkinter'),
}


class _RefuseStdlib:
    """sys.meta_path entry of an own-GIL interpreter: refuses REFUSED_STDLIB modules without
    running their initialisation."""

    def __init__(self, names):
        self.names = frozenset(names)

    def find_spec(self, name, path=None, target=None):
        if name in self.names:
            raise ImportError(
                'module %s does not support loading in subinterpreters with their own GIL '
                '(wsgi-gateway refuses it on Python %d.%d: see README, own-GIL application groups)'
                % ((name,) + sys.version_info[:2]), name=name)
        return None


def _serialise_extension_loads(own_gil):
    """Extension modules load one at a time in the whole process (see python/imports.rs); an
    own-GIL interpreter remembers CPython's refusals process-wide and repeats them."""
    loader = importlib.machinery.ExtensionFileLoader
    create, execute = loader.create_module, loader.exec_module

    def create_module(self, spec):
        origin = spec.origin or spec.name
        refused = _gw_ext_enter(origin)
        new_refusal = None
        try:
            if own_gil and refused is not None:
                raise ImportError(refused, name=spec.name, path=origin)
            try:
                return create(self, spec)
            except ImportError as e:
                if own_gil and 'does not support loading in subinterpreters' in str(e):
                    new_refusal = str(e)
                raise
        finally:
            _gw_ext_leave(origin, new_refusal)

    def exec_module(self, module):
        origin = getattr(module, '__file__', None) or module.__name__
        _gw_ext_enter(origin)
        try:
            return execute(self, module)
        finally:
            _gw_ext_leave(origin, None)

    loader.create_module = create_module
    loader.exec_module = exec_module


# Modules whose first import sets up process-wide state of a C library (OpenSSL): the main
# interpreter imports them first. On 3.12.1 a process whose OpenSSL was first set up by
# `import hashlib` or `import ssl` in an own-GIL interpreter crashes when it ends.
PROCESS_WIDE_FIRST = ('hashlib', 'ssl')


def _import_process_wide_first():
    for name in PROCESS_WIDE_FIRST:
        try:
            __import__(name)
        except ImportError:
            pass


OWN_GIL = False


def init_interpreter(python_path, venv, label, is_sub, own_gil, guard_imports):
    """Per-interpreter set-up: sys.argv, print() to the log (with the request's context), the
    venv's site-packages and the python-path entries at the front of sys.path (python-path
    first). In a process with own-GIL interpreters, the import guards above."""
    global LABEL, IS_SUB, OWN_GIL
    LABEL, IS_SUB, OWN_GIL = label, is_sub, own_gil
    if guard_imports:
        _serialise_extension_loads(own_gil)
        if not is_sub:
            _import_process_wide_first()
    if own_gil:
        names = REFUSED_STDLIB.get(sys.version_info[:2], REFUSED_STDLIB[(3, 13)])
        sys.meta_path.insert(0, _RefuseStdlib(names))
    sys.argv = ['wsgi-gateway']
    sys.stdout = sys.stderr = LogStream()
    if venv is not None:
        # What virtualenv's activate_this.py does, for this interpreter only.
        site_packages = os.path.join(venv, 'lib', 'python%d.%d' % sys.version_info[:2],
                                     'site-packages')
        sys.prefix = sys.exec_prefix = venv
        add_python_path([site_packages])
    add_python_path(python_path)


def add_python_path(paths):
    """python-path: site.addsitedir each entry (so .pth files run), all moved to the front."""
    import site
    before = set(sys.path)
    for p in paths:
        site.addsitedir(p)
    added = [p for p in sys.path if p not in before]
    sys.path[:] = added + [p for p in sys.path if p not in added]


def _format_exc():
    """traceback.format_exc(), importing `traceback` when first needed; should that import
    itself fail (an interrupt arriving during it, no memory), the exception's one line."""
    e = sys.exc_info()[1]
    try:
        import traceback
        return traceback.format_exc()
    except BaseException:
        return '%s: %s\n' % (type(e).__name__, e)


# What `importlib.util` re-exports from the import system's own modules, which every
# interpreter has loaded: `importlib.util` itself would import contextlib, functools and more.
try:
    from importlib._bootstrap_external import spec_from_file_location as _spec_from_file_location
    from importlib._bootstrap import module_from_spec as _module_from_spec
except ImportError:
    from importlib.util import spec_from_file_location as _spec_from_file_location
    from importlib.util import module_from_spec as _module_from_spec


_apps = {}
_apps_lock = _thread.allocate_lock()


def _module_name(path):
    return '_wsgi_script_' + _sha1(path.encode('utf-8', 'surrogateescape')).hexdigest()[:16]


class Unloadable:
    """What `load` gives for a script that failed to import: calling it raises the error
    (so the request cycle answers it like any app error); `text` is its traceback."""
    __slots__ = ('error', 'text')

    def __init__(self, error, text):
        self.error = error
        self.text = text

    def __call__(self, environ, start_response):
        raise self.error


class _ScriptLoader(importlib.machinery.SourceFileLoader):
    """Loads a script from its source every time, without CPython's bytecode cache: the
    cache tells files apart by their modification time in whole seconds and their size, so a
    script changed twice within a second, its size the same, would run its old code."""

    def get_code(self, fullname):
        path = self.get_filename(fullname)
        return self.source_to_code(self.get_data(path), path)


def load(path, callable_name, generation):
    """Imports a script file as a module named after its path; returns the callable, or an
    Unloadable when it fails. A new generation (the file changed) imports it again."""
    key = (path, callable_name)
    with _apps_lock:
        entry = _apps.get(key)
        if entry is not None and entry[0] == generation:
            return entry[1]
        name = _module_name(path)
        loader = _ScriptLoader(name, path)
        spec = _spec_from_file_location(name, path, loader=loader)
        module = _module_from_spec(spec)
        sys.modules[name] = module
        try:
            loader.exec_module(module)
            app = getattr(module, callable_name, None)
            if app is None:
                raise LookupError('%s defines no WSGI callable named %r' % (path, callable_name))
        except BaseException as e:
            sys.modules.pop(name, None)
            return Unloadable(e, _format_exc())
        _apps[key] = (generation, app)
        return app


ERROR_500 = (b'<!DOCTYPE html><html><head><title>500 Internal Server Error</title></head>'
             b'<body><h1>Internal Server Error</h1><p>The application failed; '
             b'the gateway log has the details.</p></body></html>\n')


def _error_500(ctx, extra=b''):
    body = ERROR_500.replace(b'</p></body>', b'</p>' + extra + b'</body>') if extra else ERROR_500
    head = (b'Status: 500 Internal Server Error\r\nContent-Type: text/html; charset=utf-8\r\n'
            b'Content-Length: %d\r\n\r\n' % len(body))
    _gw_send(ctx, head, body, True)


def _sub_interpreter_hint(text):
    if IS_SUB and any(s in text for s in SUB_INTERPRETER_FAILURES):
        if OWN_GIL:
            return ('%s: this application uses an extension module that cannot be loaded in a '
                    'sub-interpreter with its own GIL; run it without own-gil, or in the main '
                    'interpreter: application-group = "%%{GLOBAL}"' % LABEL)
        return ('%s: this application uses an extension module that cannot be loaded in a '
                'sub-interpreter; run it in the main interpreter: application-group = "%%{GLOBAL}"'
                % LABEL)
    return None


def _after_head(ctx, response, what, text):
    """Logs a failure after the response's head went out (with its traceback `text`, if any);
    returns whether the response is whole. A body that had reached its Content-Length ended
    with it, and is; any other is cut off (False: the connection is then aborted)."""
    if response.ended:
        line = '%s after the response was complete' % what
    else:
        line = '%s after the response started; response cut off' % what
    _gw_log(ctx, line if text is None else line + '\n' + text, text is not None)
    return response.ended


def complete(ctx, response, errors, result, error):
    """A request after its app returned `result` or raised `error` (the gateway called the app
    with environ and response.start_response, and sent a one-item list itself): the body,
    the errors, close(). Never raises: failures are logged and answered. Returns False when
    the response must be cut off (the connection is then aborted).

    Once the outcome is known (the body sent, or a failure caught), _gw_settle stops the
    gateway's interrupts for this request: the handling of a failure and close() run without
    one landing in them (a client gone while its response is written is seen by the write
    and, with cancel-on-disconnect, by the housekeeper too)."""
    settled = False
    try:
        if error is not None:
            try:
                raise error
            finally:
                error = None
        if result.__class__ is list:
            last = len(result) - 1
            for i, chunk in enumerate(result):
                if chunk.__class__ is not bytes:
                    raise InvalidResponse('response body must be bytes, not %s'
                                          % type(chunk).__name__)
                if i == last:
                    response.send(chunk, True)
                    return True
                response.write(chunk)
            response.finish()
            return True
        if result.__class__ is FileWrapper and response.head is not None and not response.is_head:
            where = result._fileno()
            if where is not None:
                response.send(b'', False)
                fd, pos = where
                count = -1 if response.length is None else response.length
                if not _gw_sendfile(ctx, os.dup(fd), pos, count):
                    raise ClientDisconnected('response write failed: client disconnected')
                response.send(b'', True)
                return True
        for chunk in result:
            response.write(chunk)
        response.finish()
        return True
    except BaseException as e:
        _gw_settle(ctx)
        settled = True
        return _failed(ctx, response, e)
    finally:
        if not settled:
            _gw_settle(ctx)
        if errors._pending:
            errors.flush()
        # A list (the common case) has no close(): skip the failing attribute lookup.
        if result is not None and result.__class__ is not list:
            close = getattr(result, 'close', None)
            if close is not None:
                try:
                    close()
                except BaseException:
                    _gw_log(ctx, 'error in close() of the response iterable\n'
                            + _format_exc(), True)


def _failed(ctx, response, e):
    """`complete` for a request that failed with `e` (being handled): logged and answered."""
    if isinstance(e, ClientDisconnected):
        _gw_log(ctx, str(e), False)
        return False
    if isinstance(e, Cancelled):
        _gw_log(ctx, 'cancelled: the client went away', False)
        return False
    if isinstance(e, InterruptTimeout):
        text = _format_exc()
        if response.sent:
            return _after_head(ctx, response, 'interrupted (interrupt-timeout)', text)
        _gw_log(ctx, 'interrupted (interrupt-timeout): 504\n' + text, True)
        body = b'Gateway Timeout: the application took too long\n'
        _gw_send(ctx, b'Status: 504 Gateway Timeout\r\nContent-Type: text/plain\r\n'
                 b'Content-Length: %d\r\n\r\n' % len(body), body, True)
        return True
    if isinstance(e, BodyTimeout):
        if response.sent:
            return _after_head(ctx, response, str(e), None)
        body = b'Request Timeout: the request body stalled\n'
        _gw_send(ctx, b'Status: 408 Request Timeout\r\nContent-Type: text/plain\r\n'
                 b'Content-Length: %d\r\n\r\n' % len(body), body, True)
        return True
    text = _format_exc()
    if response.sent:
        return _after_head(ctx, response, 'application error', text)
    _gw_log(ctx, text, True)
    hint = _sub_interpreter_hint(text)
    if hint is not None:
        _gw_log(ctx, hint, True)
        import html
        _error_500(ctx, b'<p>' + html.escape(hint).encode() + b'</p>')
    else:
        _error_500(ctx)
    return True


def check_script(path, callable_name):
    """For `wsgi-gateway check`: the script compiles and defines the callable at module level
    (read from its syntax tree; nothing is executed). Returns a problem or None."""
    import ast
    try:
        with open(path, 'rb') as f:
            source = f.read()
        tree = compile(source, path, 'exec', ast.PyCF_ONLY_AST)
        compile(tree, path, 'exec')
    except SyntaxError as e:
        return 'script %s does not compile: %s (line %s)' % (path, e.msg, e.lineno)
    except (OSError, ValueError) as e:
        return 'script %s: %s' % (path, e)
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Name):
                        names.add(sub.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            for alias in node.names:
                names.add(alias.asname or alias.name.split('.')[0])
        elif isinstance(node, (ast.If, ast.Try)):
            # Definitions under `if`/`try` at module level count too.
            for sub in ast.walk(node):
                if isinstance(sub, (ast.FunctionDef, ast.ClassDef)):
                    names.add(sub.name)
                elif isinstance(sub, ast.Name) and isinstance(sub.ctx, ast.Store):
                    names.add(sub.id)
                elif isinstance(sub, ast.alias):
                    names.add(sub.asname or sub.name.split('.')[0])
    if callable_name not in names and '*' not in names:
        return ('script %s defines no %r at module level (the WSGI callable; set callable '
                'if it has another name)' % (path, callable_name))
    return None
