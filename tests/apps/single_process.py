"""The basic app served by Werkzeug's own server in one process, no gunicorn and no master.

`python single_process.py PORT`: the process fmd is pointed at serves every request itself (a thread per
request).
"""
import sys

from basic import app

if __name__ == "__main__":
    app.run(host="127.0.0.1", port=int(sys.argv[1]), threaded=True)
