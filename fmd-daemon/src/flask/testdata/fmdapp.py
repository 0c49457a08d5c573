# A small Flask app with blueprints, converters, defaults, a subdomain and a host rule, built by a factory.
# It prints its route table (from url_map.iter_rules()) as one JSON line. Used by src/flask/app/tests.rs:
# run as a script (the app is only reachable through a module-level ProxyFix wrapper), under gunicorn as
# `fmdapp:create_app()` (the app is in no module global at all), or as `fmdapp:app` with FMD_MODULE_APP=1.
import json
import os
import time

from flask import Blueprint, Flask
from werkzeug.middleware.proxy_fix import ProxyFix


def create_app():
    app = Flask("fmdapp")
    app.url_map.merge_slashes = False
    api = Blueprint("api", "fmdapp", url_prefix="/api")

    @api.route("/users/<int:user_id>", methods=["GET", "DELETE"])
    def user(user_id):
        return "u"

    @api.route("/files/<path:p>")
    def files(p):
        return "f"

    @app.route("/")
    def index():
        return "i"

    @app.route("/item/<uuid:id>", strict_slashes=False)
    def item(id):
        return "x"

    @app.route("/f/<float:x>/<string(length=2):code>/", methods=["POST"])
    def fl(x, code):
        return "f"

    @app.route("/any/<any(a, b):x>")
    def anyv(x):
        return "a"

    @app.route("/page/", defaults={"n": 1})
    @app.route("/page/<int:n>")
    def page(n):
        return "p"

    app.add_url_rule("/admin", "admin", lambda: "a", subdomain="admin")
    app.add_url_rule("/hosted", "hosted", lambda: "h", host="example.com")
    app.register_blueprint(api)
    app.wsgi_app = ProxyFix(app.wsgi_app)
    rules = [
        {
            "rule": r.rule,
            "endpoint": r.endpoint,
            "methods": sorted(r.methods or []),
            "strict_slashes": bool(r.strict_slashes),
            "host": r.host or None,
            "subdomain": r.subdomain or None,
        }
        for r in app.url_map.iter_rules()
    ]
    m = app.url_map
    print(
        json.dumps({"pid": os.getpid(), "rules": rules, "strict_slashes": m.strict_slashes, "merge_slashes": m.merge_slashes}),
        flush=True,
    )
    return app


# gunicorn `fmdapp:app`: a plain module-level app (only when asked, so the factory case stays factory-only).
if os.environ.get("FMD_MODULE_APP"):
    app = create_app()

if __name__ == "__main__":
    application = ProxyFix(create_app())
    while True:
        time.sleep(3600)
