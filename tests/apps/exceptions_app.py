"""Test app for exception capture: views that raise, logged the way a plain Flask app logs them.

Run under gunicorn: `gunicorn exceptions_app:app`. It never knows it is monitored.

By default Flask's own handler logs each exception to `wsgi.errors`, which gunicorn sends to its error log
(`--error-logfile -`: the worker's stderr). To keep the test output readable the worker's stderr is
/dev/null here, as a daemonized gunicorn's is: the write() calls are the same. With FMD_TEST_LOG_FILE set,
the app logs to that file instead (a FileHandler opened at the first error, while a request is served).
"""
import logging
import os

from flask import Flask

app = Flask(__name__)

log_file = os.environ.get("FMD_TEST_LOG_FILE")
if log_file:
    handler = logging.FileHandler(log_file, delay=True)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    app.logger.addHandler(handler)
else:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)


def lookup(table):
    return table["missing"]  # raises


@app.route("/boom")
def boom():
    return lookup({"present": 1})


@app.route("/bad")
def bad():
    return str(int("not a number"))


@app.route("/chained")
def chained():
    try:
        lookup({})
    except KeyError as e:
        raise RuntimeError("lookup failed") from e


@app.route("/ok")
def ok():
    return "ok"
