"""Activate a virtualenv for the current interpreter, as virtualenv's bin/activate_this.py
does (tests/groups.rs installs this file into a venv's bin/):

    exec(open(this_file).read(), {'__file__': this_file})

Prepends the venv's site-packages to sys.path (through site.addsitedir, so .pth files run)
and sets sys.prefix to the venv, keeping the old one as sys.real_prefix."""
import os
import site
import sys

try:
    abs_file = os.path.abspath(__file__)
except NameError as exc:
    raise AssertionError("You must use exec(open(this_file).read(), {'__file__': this_file}))") from exc

bin_dir = os.path.dirname(abs_file)
base = bin_dir[: -len("bin") - 1]

os.environ["PATH"] = os.pathsep.join([bin_dir, *os.environ.get("PATH", "").split(os.pathsep)])
os.environ["VIRTUAL_ENV"] = base

prev_length = len(sys.path)
for lib in ("lib/python%d.%d/site-packages" % sys.version_info[:2],):
    path = os.path.realpath(os.path.join(base, lib))
    site.addsitedir(path)
sys.path[:] = sys.path[prev_length:] + sys.path[0:prev_length]

sys.real_prefix = sys.prefix
sys.prefix = base
