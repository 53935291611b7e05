# Minimal settings: no database, no apps, no middleware; test use only.
SECRET_KEY = 'wsgi-gateway-tests-only-not-a-secret'
DEBUG = False
ALLOWED_HOSTS = ['*']
ROOT_URLCONF = 'frontend_site.urls'
INSTALLED_APPS = []
MIDDLEWARE = []
DATABASES = {}
TEMPLATES = []
USE_TZ = True
USE_I18N = False
