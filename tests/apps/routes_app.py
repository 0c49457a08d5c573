"""Test app for endpoint attribution: blueprints, every converter, a custom converter, custom endpoint names,
a MethodView, one rule split across views by method, strict slashes, built by a factory.

Every view answers with what Flask itself resolved (`request.endpoint`, `request.url_rule.rule`), so the
test can compare fmd's attribution with the app's own, request by request.
"""
import os

from flask import Blueprint, Flask, jsonify, request
from flask.views import MethodView
from werkzeug.routing import BaseConverter


class ListConverter(BaseConverter):
    regex = r"[a-z]+(?:,[a-z]+)*"


def resolved(**_kwargs):
    return jsonify(endpoint=request.endpoint, rule=request.url_rule.rule)


shop = Blueprint("shop", __name__, url_prefix="/shop")
shop.add_url_rule("/items/<int:item_id>", "item", resolved)
shop.add_url_rule("/items/<float:price>/cheaper", "cheaper", resolved)
shop.add_url_rule("/files/<path:subpath>", "files", resolved)
shop.add_url_rule("/orders/<uuid:order>", "order", resolved)
shop.add_url_rule("/<any(books, music):section>/", "section", resolved)
shop.add_url_rule("/tags/<list:tags>", "tags", resolved)

admin = Blueprint("admin", __name__)
admin.add_url_rule("/admin/", "home", resolved)
admin.add_url_rule("/admin/users/<name>", "user", resolved)


class ItemAPI(MethodView):
    def get(self, item_id):
        return resolved()

    def delete(self, item_id):
        return resolved()


def create_app():
    app = Flask(__name__)
    app.url_map.converters["list"] = ListConverter
    app.register_blueprint(shop)
    app.register_blueprint(admin)
    app.add_url_rule("/", "index", resolved)
    app.add_url_rule("/api/items/<int:item_id>", view_func=ItemAPI.as_view("item_api"))
    app.add_url_rule("/thing", "get_thing", resolved, methods=["GET"])
    app.add_url_rule("/thing", "create_thing", resolved, methods=["POST"])
    app.add_url_rule("/users/new", "new_user", resolved)
    app.add_url_rule("/users/<username>", "show_user", resolved)
    app.add_url_rule("/loose", "loose", resolved, strict_slashes=False)
    app.add_url_rule("/docs/<path:page>", endpoint="documentation", view_func=resolved)
    app.add_url_rule("/never/requested/<int:x>", "never_requested", resolved)
    # A deploy that adds a rule: present only when this file exists when the worker imports the app.
    if os.path.exists(os.environ.get("FMD_TEST_EXTRA_RULE_FLAG", "/nonexistent")):
        app.add_url_rule("/added/<int:n>", "added_later", resolved)
    return app
