"""Bad input on every route: a clear RFC 9457 problem naming what is wrong, and nothing stored."""

from __future__ import annotations

import re
from typing import Any

import pytest
from sqlalchemy import func, select

from regenguide.store.models import Base


def _counts(engine: Any) -> dict[str, int]:
    with engine.connect() as conn:
        tables = Base.metadata.sorted_tables
        return {t.name: conn.execute(select(func.count()).select_from(t)).scalar_one() for t in tables}


def _operations(app: Any) -> list[tuple[str, str, dict[str, Any]]]:
    """Every operation of the published OpenAPI schema (so nothing mounted is missed)."""
    return [
        (method.upper(), path, op)
        for path, item in sorted(app.openapi()["paths"].items())
        for method, op in sorted(item.items())
        if method in ("get", "post", "put", "patch", "delete")
    ]


def _fill(path: str, value: str) -> str:
    return re.sub(r"\{[^}]+\}", value, path)


def test_every_write_route_refuses_a_malformed_body_and_stores_nothing(app: Any, client: Any, auth: Any,
                                                                       engine: Any) -> None:
    writes = [(m, p, op) for m, p, op in _operations(app) if "requestBody" in op]
    assert len(writes) >= 25  # the whole API is covered, not a sample
    before = _counts(engine)
    headers = {**auth["admin"], "If-Match": '"v1"'}
    for method, path, op in writes:
        url = _fill(path, "1")
        content = op["requestBody"]["content"]
        if "application/json" in content:
            r = client.request(method, url, json=[1, 2, 3], headers=headers)
        else:  # form or multipart: required fields missing
            r = client.request(method, url, data={}, headers=headers)
        assert r.status_code in (400, 404, 412, 422, 428), (method, path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), (method, path)
        body = r.json()
        assert body["status"] == r.status_code and body["detail"], (method, path)
    assert _counts(engine) == before


def test_every_route_with_an_id_refuses_a_non_numeric_id(app: Any, client: Any, auth: Any, engine: Any) -> None:
    before = _counts(engine)
    checked = 0
    for method, path, op in _operations(app):
        int_params = [p["name"] for p in op.get("parameters", [])
                      if p["in"] == "path" and p.get("schema", {}).get("type") == "integer"]
        if not int_params:
            continue
        kwargs: dict[str, Any] = {"json": {}} if "requestBody" in op else {}
        r = client.request(method, _fill(path, "not-a-number"), headers=auth["admin"], **kwargs)
        checked += 1
        assert r.status_code == 422, (method, path, r.status_code)
        assert r.headers["content-type"].startswith("application/problem+json")
        assert any(e["field"] in int_params for e in r.json()["errors"]), (path, r.json())
    assert checked >= 20
    assert _counts(engine) == before


@pytest.mark.parametrize("path", ["/api/v1/patients", "/api/v1/plans", "/api/v1/products"])
def test_pagination_bounds(client: Any, auth: Any, path: str) -> None:
    for query in ("limit=0", "limit=100000", "offset=-1", "limit=abc"):
        r = client.get(f"{path}?{query}", headers=auth["admin"])
        assert r.status_code == 422, (path, query)
        assert r.json()["errors"][0]["field"] in ("limit", "offset")


def _schema(app: Any, op: dict[str, Any]) -> dict[str, Any]:
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    if "$ref" in schema:
        schema = app.openapi()["components"]["schemas"][schema["$ref"].rsplit("/", 1)[1]]
    return schema  # type: ignore[no-any-return]


def test_every_json_route_names_each_missing_required_field_and_stores_nothing(
    app: Any, client: Any, auth: Any, engine: Any
) -> None:
    """An empty object on every JSON write route: a 422 problem whose errors name every required field."""
    before = _counts(engine)
    headers = {**auth["admin"], "If-Match": '"v1"'}
    checked = 0
    for method, path, op in _operations(app):
        if "application/json" not in op.get("requestBody", {}).get("content", {}):
            continue
        required = set(_schema(app, op).get("required", []))
        if not required:
            continue
        r = client.request(method, _fill(path, "1"), json={}, headers=headers)
        assert r.status_code == 422, (method, path, r.status_code, r.text)
        assert r.headers["content-type"].startswith("application/problem+json"), (method, path)
        named = {e["field"].split(".")[-1] for e in r.json()["errors"]}
        assert required <= named, (method, path, required - named)
        checked += 1
    assert checked >= 20
    assert _counts(engine) == before
