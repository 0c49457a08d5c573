"""The basic app, imported only once the file /tmp/fmd-gate-<pid> exists.

Run as `gunicorn --preload gated:app`: the master imports the app before it binds or forks, so until the
test creates the gate the master is alive with no worker. That is how a test attaches fmd to a master
before it forks, deterministically.
"""
import os
import time

_gate = f"/tmp/fmd-gate-{os.getpid()}"
_deadline = time.monotonic() + 120
while not os.path.exists(_gate):
    if time.monotonic() > _deadline:
        raise SystemExit(f"{_gate} was never created")
    time.sleep(0.05)

from basic import app  # noqa: E402,F401
