# Builds known values, prints their ids and expected readings as one JSON line, then sleeps until killed.
# Used by fmd-daemon's python live tests (src/python/live_tests.rs).
import json, sys, threading, time


class C:
    def __init__(self):
        self.a = 1
        self.b = "x"
        self.c = -5


class Many:
    pass


inst = C()
inst_dict = C()
inst_dict.__dict__  # materialise a (split-table) dict on 3.11+
inst_dict.extra = "later"
many = Many()
for i in range(40):
    setattr(many, "f%d" % i, i)
deleted = {"k%d" % i: i for i in range(20)}
for i in range(0, 20, 3):
    del deleted["k%d" % i]

vals = {
    "ascii": "hello world",
    "latin1": "caf\xe9 \xff",
    "ucs2": "snow \u2603 \u4e2d\u6587",
    "ucs4": "emoji \U0001F600 \U00010348",
    "empty": "",
    "bytes": b"\x00\x01abc\xff",
    "int_small": 42,
    "int_zero": 0,
    "int_neg": -7,
    "int_big": 2**100 + 12345,
    "int_bigneg": -(2**64) - 3,
    "float": 3.25,
    "tuple": (1, "two", 3),
    "list": [10, 20, 30],
    "dict_small": {"a": 1, "b": 2},
    "dict_big": {"k%d" % i: i for i in range(1000)},
    "dict_deleted": deleted,
    "dict_general": {1: 10, 2: 20, 3: 30},
    "set": {"x", "y", "z"},
    "frozenset": frozenset({"p", "q"}),
}
attrs = {"inst": inst, "inst_dict": inst_dict, "many": many}

stop = threading.Event()
ready = []


def worker():
    ready.append(threading.get_native_id())
    stop.wait()


threads = [threading.Thread(target=worker) for _ in range(3)]
for t in threads:
    t.start()
while len(ready) < 3:
    time.sleep(0.01)


def expect(v):
    if isinstance(v, bytes):
        return {"bytes": list(v)}
    if isinstance(v, (set, frozenset)):
        return sorted(v)
    if isinstance(v, tuple):
        return list(v)
    if isinstance(v, int) and abs(v) >= 2**53:
        return str(v)
    if isinstance(v, dict):
        return {str(k): x for k, x in v.items()}
    return v


out = {
    "version": list(sys.version_info[:3]),
    "values": {k: {"id": id(v), "expect": expect(v)} for k, v in vals.items()},
    "attrs": {k: {"id": id(v), "expect": {a: expect(x) for a, x in vars(v).items()}} for k, v in attrs.items()},
    "vals_id": id(vals),
    "tids": sorted(ready),
}
print(json.dumps(out), flush=True)
while True:
    time.sleep(3600)
