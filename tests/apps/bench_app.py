"""The benchmark app: four endpoints whose cost is fixed work, not fixed time, so whatever a monitor adds
shows up as lost throughput and longer latency (`cargo xtask bench`).

Run under gunicorn: `gunicorn bench_app:app`.
"""
import time

from flask import Flask

app = Flask(__name__)

# Iteration counts tuned so that on a ~3 GHz core CPython 3.11 spends about 0.3 ms and 20 ms; the benchmark
# reports the measured bare latency, so the exact figure only has to be in the right range.
LIGHT_ITERATIONS = 8000
HEAVY_ITERATIONS = 25000


def spin(n):
    total = 0
    for i in range(n):
        total += i * i
    return total


# Three levels of calls so that a profiler has a real tree to attribute samples to.
def leaf(n):
    return spin(n)


def middle(n):
    return sum(leaf(n) for _ in range(4))


def outer(n):
    return sum(middle(n) for _ in range(5))


@app.route("/trivial")
def trivial():
    return "ok"


@app.route("/cpu-light")
def cpu_light():
    return str(spin(LIGHT_ITERATIONS))


@app.route("/cpu-heavy")
def cpu_heavy():
    return str(outer(HEAVY_ITERATIONS))


@app.route("/sleep")
def sleep():
    time.sleep(0.005)
    return "slept"
