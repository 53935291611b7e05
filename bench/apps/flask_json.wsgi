# A small Flask view returning JSON: framework overhead (routing, request and
# response objects, JSON encoding) on top of the server's own.
from flask import Flask, jsonify, request

app = Flask(__name__)
ROWS = [{"id": n, "label": "row %d" % n, "even": n % 2 == 0} for n in range(8)]


@app.get("/")
def index():
    return jsonify(greeting="Hello, world!", method=request.method, rows=ROWS)


application = app
