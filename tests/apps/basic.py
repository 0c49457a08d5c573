"""Test app for request capture: every kind of response the capture has to get right.

Run under gunicorn: `gunicorn basic:app`. It never knows it is monitored.
"""
import os
import time
import urllib.request

from flask import Flask, Response, redirect, request

app = Flask(__name__)


@app.route("/")
def index():
    return "ok"


@app.route("/pid")
def pid():
    """Which worker served this request."""
    return str(os.getpid())


@app.route("/hello/<name>")
def hello(name):
    return f"hello {name}"


@app.route("/echo", methods=["POST"])
def echo():
    return request.get_data(), 200, {"Content-Type": "application/octet-stream"}


@app.route("/redirect")
def go_elsewhere():
    return redirect("/hello/redirected", code=302)


@app.route("/error")
def error():
    raise RuntimeError("a deliberate failure")


@app.route("/sleep")
def sleep():
    time.sleep(0.05)
    return "slept"


@app.route("/stream")
def stream():
    def chunks():
        for i in range(5):
            yield f"chunk {i}\n" * 20

    # No length: gunicorn sends it chunked to HTTP/1.1 clients and close-delimited to HTTP/1.0 ones.
    return Response(chunks(), mimetype="text/plain")


@app.route("/outgoing")
def outgoing():
    """Makes the worker itself a client of another local server, which must not count as a served request."""
    port = int(request.args["port"])
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/upstream", timeout=5) as answer:
        return b"upstream said " + answer.read()
