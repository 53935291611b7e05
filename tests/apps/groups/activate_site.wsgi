# mod_wsgi's "scenario 4": the script activates its own virtualenv with site.addsitedir and
# moves the new entries to the front of sys.path (so the venv wins over the base
# installation's packages). tests/groups.rs copies this file with the real venv path.
python_home = '/usr/local/envs/myapp1'

import sys
import site

python_version = '.'.join(map(str, sys.version_info[:2]))
site_packages = python_home + '/lib/python%s/site-packages' % python_version

prev_sys_path = list(sys.path)
site.addsitedir(site_packages)
new_sys_path = []
for item in list(sys.path):
    if item not in prev_sys_path:
        new_sys_path.append(item)
        sys.path.remove(item)
sys.path[:0] = new_sys_path

import six


def application(environ, start_response):
    body = ('six=%s\nsix_file=%s\nprefix=%s\n'
            % (six.__version__, six.__file__, sys.prefix)).encode()
    start_response('200 OK', [('Content-Type', 'text/plain'),
                              ('Content-Length', str(len(body)))])
    return [body]
