"""Test app for monitoring levels and outliers: /mixed takes about 5 ms, and every 20th request (the client
says which with ?n=) about 200 ms in slow_helper(); /block sleeps as long as asked (a request that hangs);
/quiet is a plain fast endpoint whose level the test changes.

Run under gunicorn: `gunicorn outliers_app:app`. It never knows it is monitored. The test finds lines by
their markers (`# name`) instead of hard-coding numbers.
"""
import time

from flask import Flask, request

app = Flask(__name__)


def slow_helper():
    time.sleep(0.2)  # slow-helper-sleep


@app.route("/mixed", methods=["GET", "POST"])
def mixed():
    n = int(request.args.get("n", "0"))
    if n % 20 == 19:
        slow_helper()  # view-calls-helper
    else:
        time.sleep(0.005)
    return {"n": n}


@app.route("/block")
def block():
    time.sleep(float(request.args.get("secs", "0")))  # block-sleep
    return "done"


@app.route("/quiet")
def quiet():
    time.sleep(0.02)  # quiet-sleep
    return "quiet"
