"""Threads parked at known lines, for python/symbols/tests.rs: one in inner() <- Outer.middle() <- outer(),
one 300 calls deep in recurse(). Prints the tids and expected lines as one JSON line, then waits."""
import json
import sys
import threading
import time

ready = threading.Barrier(3)


def line_of(marker):
    with open(__file__) as f:
        for n, text in enumerate(f, 1):
            if text.rstrip().endswith("# " + marker):
                return n
    raise LookupError(marker)


def inner():
    ready.wait()
    time.sleep(1000)  # inner-sleep


class Outer:
    def middle(self):
        inner()  # middle-call


def outer():
    Outer().middle()  # outer-call


def recurse(n):
    if n == 0:
        ready.wait()
        time.sleep(1000)  # recurse-sleep
    recurse(n - 1)  # recurse-call


tids = {}


def run(name, target, *args):
    tids[name] = threading.get_native_id()
    target(*args)


threading.Thread(target=run, args=("outer", outer), daemon=True).start()
threading.Thread(target=run, args=("deep", recurse, 300), daemon=True).start()
sys.setrecursionlimit(10000)
ready.wait()
time.sleep(0.2)
print(
    json.dumps(
        {
            "file": __file__,
            "tids": tids,
            "lines": {m: line_of(m) for m in ["inner-sleep", "middle-call", "outer-call", "recurse-sleep", "recurse-call"]},
        }
    ),
    flush=True,
)
time.sleep(1000)
