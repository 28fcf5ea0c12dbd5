"""The floor: a bare Flask endpoint that parses the JSON body and answers a body of the same size.

Served by the same gunicorn command as the real service (bench/run.py builds both from
``baclofen-check serve``) so that the ratio of the two measures what the checker adds to the
cost of serving any Flask request at all. The answer is read once, at start, from the file
named by ``BENCH_BARE_RESPONSE`` (the harness writes the real service's answer to the same
call there), so both servers send the same number of bytes.
"""

from __future__ import annotations

import os

from flask import Flask, Response, request


def create_app() -> Flask:
    path = os.environ.get("BENCH_BARE_RESPONSE")
    answer = b'{"cards": []}'
    if path:
        with open(path, "rb") as f:
            answer = f.read()
    app = Flask(__name__)

    @app.post("/cds-services/<service_id>")
    def call(service_id: str) -> Response:
        body = request.get_json()
        if not isinstance(body, dict) or "hook" not in body:
            return Response(b'{"error": "not a hook call"}', 400, mimetype="application/json")
        return Response(answer, mimetype="application/json")

    return app
