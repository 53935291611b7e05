# A small Flask app for the front-end tests: the URLs it generates must carry the mount
# prefix (SCRIPT_NAME) the gateway derived.
from flask import Flask, request, url_for

app = Flask(__name__)


@app.route('/')
def index():
    return 'flask index script_root=%s\n' % request.script_root


@app.route('/hello/<name>')
def hello(name):
    return 'hello %s url=%s\n' % (name, url_for('hello', name='x', _external=False))


application = app
