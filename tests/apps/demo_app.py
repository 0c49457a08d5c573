"""The demo's sample shop API: blueprints, converters, a slow report, CPU work and errors.

`cargo xtask demo` runs it under gunicorn and attaches fmd to it, with no change to this file.
"""
import hashlib
import random
import time

from flask import Blueprint, Flask, abort, jsonify, request

api = Blueprint("api", __name__, url_prefix="/api")
USERS = {i: f"user{i}" for i in range(1, 50)}


@api.route("/users")
def list_users():
    return jsonify(sorted(USERS.values()))


@api.route("/users/<int:user_id>")
def get_user(user_id):
    if user_id not in USERS:
        abort(404)
    return jsonify(id=user_id, name=USERS[user_id])


@api.route("/users", methods=["POST"])
def create_user():
    new_id = max(USERS) + 1
    USERS[new_id] = (request.get_json(silent=True) or {}).get("name", f"user{new_id}")
    return jsonify(id=new_id), 201


@api.route("/search")
def search():
    term = request.args.get("q", "")
    return jsonify([u for u in USERS.values() if term in u])


def create_app():
    app = Flask(__name__)
    app.register_blueprint(api)

    @app.route("/")
    def index():
        return "fmd demo shop"

    @app.route("/reports/<name>")
    def report(name):
        time.sleep(random.uniform(0.05, 0.25))
        return jsonify(report=name, rows=random.randint(1, 1000))

    @app.route("/compute/<int:n>")
    def compute(n):
        digest = b"fmd"
        for _ in range(min(n, 20000)):
            digest = hashlib.sha256(digest).digest()
        return digest.hex()

    @app.route("/flaky")
    def flaky():
        if random.random() < 0.2:
            raise RuntimeError("flaky failure")
        return "fine"

    return app


app = create_app()
