# mod_wsgi's "scenario 4" with virtualenv's activate_this.py: the script runs the venv's
# bin/activate_this.py. tests/groups.rs copies this file with the real venv path.
python_home = '/usr/local/envs/myapp1'

activate_this = python_home + '/bin/activate_this.py'
with open(activate_this) as f:
    exec(f.read(), dict(__file__=activate_this))

import sys

import six


def application(environ, start_response):
    body = ('six=%s\nsix_file=%s\nprefix=%s\nreal_prefix=%s\n'
            % (six.__version__, six.__file__, sys.prefix, getattr(sys, 'real_prefix', ''))
            ).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]
