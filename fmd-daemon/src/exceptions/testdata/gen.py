"""Writes the recogniser's fixtures: real tracebacks of this interpreter as Flask's default handler logs them.

Run with every supported CPython: `python3.X gen.py` writes `py3X.json` next to this file. Each fixture holds
the bytes of each write() logging made (`writes`) and, from the traceback module's own structured view of
the same exceptions, what the recogniser must find (`expected`): one chain per logged traceback, oldest
exception first, each with its printed type, message and frames.
"""
import io
import json
import logging
import os
import sys
import traceback

HERE = os.path.dirname(os.path.abspath(__file__))


class Recorder(io.StringIO):
    """A stream that remembers each write, as the kernel would see write() calls on an unbuffered fd."""

    def __init__(self):
        super().__init__()
        self.writes = []

    def write(self, s):
        self.writes.append(s)
        return len(s)


stream = Recorder()
handler = logging.StreamHandler(stream)
# Flask's default format.
handler.setFormatter(logging.Formatter("[%(asctime)s] %(levelname)s in %(module)s: %(message)s"))
log = logging.getLogger("app")
log.addHandler(handler)
log.setLevel(logging.INFO)
expected = []


def printed_type(t):
    name = t.__qualname__
    if t.__module__ not in ("__main__", "builtins"):
        name = t.__module__ + "." + name
    return name


def describe(exc):
    """The chain as the recogniser must report it: oldest first, with the relation to the next one."""
    chain = []
    relation = None
    while exc is not None:
        only = "".join(traceback.format_exception_only(type(exc), exc)).rstrip("\n")
        head = printed_type(type(exc))
        message = only[len(head) + 2:] if only.startswith(head + ": ") else ""
        frames = [
            {"file": f.filename, "line": f.lineno, "function": f.name, "code": f.line or None}
            for f in traceback.extract_tb(exc.__traceback__)
        ]
        chain.append({"type": head, "message": message, "frames": frames, "relation": relation})
        if exc.__cause__ is not None:
            relation, exc = "cause", exc.__cause__
        elif exc.__context__ is not None and not exc.__suppress_context__:
            relation, exc = "context", exc.__context__
        else:
            exc = None
    chain.reverse()
    # Relations are stored on the later exception: "how this one relates to the one before it".
    rels = [c["relation"] for c in chain]
    for i, c in enumerate(chain):
        c["relation"] = rels[i - 1] if i > 0 else None
    # Python collapses repeated frames ("[Previous line repeated N more times]"): only the printed ones count.
    return chain


def logged(fn, path):
    log.info("127.0.0.1 GET %s", path)
    try:
        fn()
    except Exception as e:
        log.error("Exception on %s [GET]", path, exc_info=True)
        chain = describe(e)
        for c in chain:
            c["frames"] = collapse(c["frames"])
        expected.append(chain)


def collapse(frames):
    """traceback's StackSummary.format prints at most 3 identical consecutive frames."""
    out = []
    count = 0
    last = None
    for f in frames:
        key = (f["file"], f["line"], f["function"])
        if key == last:
            count += 1
        else:
            last, count = key, 1
        if count <= 3:
            out.append(f)
    return out


def helper(d):
    return d["missing"]


def view_keyerror():
    return helper({"present": 1})


def view_context():
    try:
        helper({})
    except KeyError:
        raise ValueError("bad input")


def view_cause():
    try:
        int("x")
    except ValueError as e:
        raise RuntimeError("wrapped") from e


def view_json():
    json.loads("{")


def view_multiline():
    raise ValueError("line one\nline two")


def view_empty():
    raise ValueError()


class AppError(Exception):
    pass


def view_custom():
    raise AppError("custom")


def recurse(n):
    return recurse(n + 1)


def view_recursion():
    sys.setrecursionlimit(80)
    try:
        recurse(0)
    finally:
        sys.setrecursionlimit(1000)


def view_expression():
    values = {"a": 1}
    total = (values["a"] +
             values["b"])
    return total


def view_note():
    e = ValueError("with a note")
    if hasattr(e, "add_note"):
        e.add_note("note: the request was malformed")
    raise e


def view_attribute():
    obj = None
    return obj.name.upper()


for fn, path in [
    (view_keyerror, "/keyerror"),
    (view_context, "/context"),
    (view_cause, "/cause"),
    (view_json, "/json"),
    (view_multiline, "/multiline"),
    (view_empty, "/empty"),
    (view_custom, "/custom"),
    (view_recursion, "/recursion"),
    (view_expression, "/expression"),
    (view_note, "/note"),
    (view_attribute, "/attribute"),
]:
    logged(fn, path)
log.info("done")

name = "py%d%d.json" % sys.version_info[:2]
with open(os.path.join(HERE, name), "w") as f:
    json.dump({"python": sys.version.split()[0], "writes": stream.writes, "expected": expected}, f, indent=1)
    f.write("\n")
