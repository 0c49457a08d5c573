"""Test app for the profiler: the view's time is split about 60/30/10 between cpu_a() (pure-Python CPU),
wait_b() (time.sleep, off CPU) and cpu_c() (pure-Python CPU), so a correct wall-clock profile shows
those shares and an on-CPU profile shows wait_b near zero. /deep recurses 300 frames deep; /gc collects.

Run under gunicorn: `gunicorn profiled:app`. It never knows it is profiled. The lines of the calls are
found by their markers, so the test reads them from this file instead of hard-coding numbers.
"""
import gc
import time

from flask import Flask

app = Flask(__name__)

# Milliseconds per request of each part (FMD_PROFILED_SCALE scales them all).
A_MS, B_MS, C_MS = 60.0, 30.0, 10.0


def spin(ms):
    """Pure-Python CPU work for `ms` milliseconds of wall time."""
    end = time.perf_counter() + ms / 1000.0
    n = 0
    while time.perf_counter() < end:  # spin-loop
        n += 1
    return n


def cpu_a():
    return spin(A_MS)  # cpu_a-call


def wait_b():
    time.sleep(B_MS / 1000.0)  # wait_b-sleep


def cpu_c():
    return spin(C_MS)  # cpu_c-call


@app.route("/work")
def work():
    t0 = time.perf_counter()
    cpu_a()  # view-a
    t1 = time.perf_counter()
    wait_b()  # view-b
    t2 = time.perf_counter()
    cpu_c()  # view-c
    t3 = time.perf_counter()
    # What each part really took here (threads of a gthread worker slow each other down through the GIL):
    # the test compares the profile's shares with these.
    return {"a": t1 - t0, "b": t2 - t1, "c": t3 - t2}


def recurse(n):
    if n == 0:
        return spin(100)  # deep-bottom
    return recurse(n - 1)  # deep-call


@app.route("/deep")
def deep():
    return str(recurse(300))  # view-deep


@app.route("/gc")
def collect():
    junk = [[i] for i in range(200000)]
    gc.collect()  # gc-collect
    return str(len(junk))


@app.route("/fixed")
def fixed():
    # A fixed amount of pure-Python work (about 5 ms), for throughput benchmarks with and without sampling.
    return str(sum(i * i for i in range(40000)))
