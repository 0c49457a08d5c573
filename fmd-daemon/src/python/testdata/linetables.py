"""Captures line-table fixtures for python/linetable.rs from a real interpreter.

Run with each interpreter: `python3.X linetables.py > linetables/3.X.json`. For every code object in this file
it writes the raw table (co_lnotab before 3.10, co_linetable after), co_firstlineno and, for each byte
offset of the bytecode (including 3.11+ inline caches), the line CPython itself reports for it (dis's line
starts before 3.10, co_lines() in 3.10, co_positions() in 3.11+), so the Rust decoder is checked against
the interpreter, not against itself.
"""
import json
import sys


def simple(a, b):
    c = a + b
    return c * 2


def loops(n):
    total = 0
    for i in range(n):
        if i % 3 == 0:
            total += i
        elif i % 5 == 0:
            total -= 1
        else:
            try:
                total //= (i - 7)
            except ZeroDivisionError:
                total = 0
    while total > 100:
        total -= 7
    return total


def multi_line(x):
    value = (
        x
        + 1
        + len(
            str(x)
        )
    )
    return [
        v * 2
        for v in range(value)
        if v
    ]




































































































































def after_gap(x):
    y = x + 1
























































































































































































































































































    z = y * 2  # more than 255 lines below the previous statement
    return z


class Thing:
    def method(self, k):
        return {k: [i for i in range(k)]}


def code_objects():
    out = []
    for f in (simple, loops, multi_line, after_gap, Thing.method):
        out.append(f.__code__)
        out.extend(c for c in f.__code__.co_consts if hasattr(c, "co_code"))
    return out


def expected(code):
    n = len(code.co_code)
    minor = sys.version_info[1]
    lines = []
    if minor >= 11:
        for i, pos in enumerate(code.co_positions()):
            lines.append([2 * i, pos[0]])
    elif minor == 10:
        ranges = list(code.co_lines())
        for off in range(0, n, 2):
            line = None
            for start, end, ln in ranges:
                if start <= off < end:
                    line = ln
                    break
            lines.append([off, line])
    else:
        import dis
        starts = list(dis.findlinestarts(code))
        for off in range(0, n, 2):
            line = code.co_firstlineno
            for s, ln in starts:
                if s <= off:
                    line = ln
            lines.append([off, line])
    return lines


def main():
    minor = sys.version_info[1]
    out = []
    for code in code_objects():
        table = code.co_linetable if minor >= 10 else code.co_lnotab
        out.append(
            {
                "name": code.co_name,
                "firstlineno": code.co_firstlineno,
                "table": table.hex(),
                "lines": expected(code),
            }
        )
    json.dump({"version": "%d.%d" % sys.version_info[:2], "code": out}, sys.stdout, indent=0)


main()
