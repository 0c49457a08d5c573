"""Test app for versions and users: a Flask app with a session (signed with its own secret key), so fmd
can be checked to read Flask-Login-style `_user_id` out of the cookie without the key.

Run under gunicorn: `gunicorn identity:app`. It never knows it is monitored.
"""
from flask import Flask, request, session

app = Flask(__name__)
app.secret_key = "fmd-test-secret-never-given-to-fmd"


@app.route("/")
def index():
    return "ok"


@app.route("/login/<uid>")
def login(uid):
    """Logs `uid` in as Flask-Login does; answers the session cookie's value (the one Flask sets)."""
    session["_user_id"] = uid
    if request.args.get("big"):
        # Long and repetitive: itsdangerous compresses it (the cookie then starts with '.').
        session["prefs"] = "dark theme, large font; " * 40
    return app.session_interface.get_signing_serializer(app).dumps(dict(session))


@app.route("/whoami")
def whoami():
    return str(session.get("_user_id"))
