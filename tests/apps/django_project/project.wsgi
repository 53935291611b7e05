# WSGI entry of the minimal Django project used by the front-end tests: puts the project
# directory on sys.path, names the settings and loads the project's own wsgi module.
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:
    sys.path.insert(0, HERE)
os.environ.setdefault('DJANGO_SETTINGS_MODULE', 'frontend_site.settings')

from frontend_site.wsgi import application  # noqa: E402,F401
