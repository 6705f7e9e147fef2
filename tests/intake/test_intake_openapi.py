"""docs/intake-openapi.yaml and the reference server agree: same routes, fields, enums and answers."""

from __future__ import annotations

import re

import yaml
from intake_harness import OTHER_TOKEN, REPO, call, event_id, valid_report_body

from intake import schema
from intake.faults import MODES
from intake.server import ROUTES
from intake.store import STATUS_AFTER

SPEC = yaml.safe_load((REPO / "docs" / "intake-openapi.yaml").read_text(encoding="utf-8"))
METHODS = ("get", "post", "put", "delete", "patch")


def resolve(node: dict) -> dict:
    """Follow local $refs (JSON pointers into the spec)."""
    while isinstance(node, dict) and "$ref" in node:
        target = SPEC
        for part in node["$ref"].lstrip("#/").split("/"):
            target = target[part]
        node = target
    return node


def required_keys(schema_node: dict) -> set[str]:
    node = resolve(schema_node)
    keys = set(node.get("required", ()))
    for part in node.get("allOf", ()):
        keys |= required_keys(part)
    return keys


def operations():
    for path, item in SPEC["paths"].items():
        for method in METHODS:
            if method in item:
                yield path, method, item[method]


def test_the_spec_is_openapi_3_1_with_the_servers_routes():
    assert SPEC["openapi"].startswith("3.1")
    spec_routes = {(method.upper(), path) for path, method, _ in operations()}
    assert spec_routes == set(ROUTES)


def test_required_fields_and_enums_match_the_validator():
    schemas = SPEC["components"]["schemas"]
    report, update = schemas["ReportIn"], schemas["UpdateIn"]
    assert tuple(report["required"]) == schema.REPORT_REQUIRED
    assert tuple(update["required"]) == schema.UPDATE_REQUIRED
    assert tuple(report["properties"]["type"]["enum"]) == schema.INCIDENT_TYPES
    assert tuple(report["properties"]["event_type"]["enum"]) == schema.REPORT_EVENT_TYPES
    assert tuple(schemas["Location"]["properties"]["source"]["enum"]) == schema.LOCATION_SOURCES
    assert tuple(schemas["Media"]["properties"]["kind"]["enum"]) == schema.MEDIA_KINDS
    assert tuple(update["properties"]["kind"]["enum"]) == schema.UPDATE_KINDS
    assert tuple(schemas["FaultMode"]["properties"]["mode"]["enum"]) == MODES
    assert set(schemas["Status"]["enum"]) == {"open", *STATUS_AFTER.values()}
    assert schemas["Time"]["pattern"] == schema.RFC3339_UTC_RE.pattern


def test_the_facility_record_and_unit_codes_match_the_validator_and_the_bridge():
    from bridge import facilities, facility_types

    schemas = SPEC["components"]["schemas"]
    fac = schemas["Facility"]["properties"]
    assert tuple(fac["hazards"]["items"]["enum"]) == schema.HAZARDS == tuple(facility_types.HAZARDS)
    for name, (lo, hi) in schema.FACILITY_RANGES.items():
        assert (fac[name]["minimum"], fac[name]["maximum"]) == (lo, hi) == facilities.RANGES[name]
    assert schemas["WardCode"]["pattern"] == schema.WARD_CODE_RE.pattern
    assert schemas["ProvinceCode"]["pattern"] == schema.PROVINCE_CODE_RE.pattern
    assert schemas["Contact"]["properties"]["phone"]["pattern"] == schema.PHONE_RE.pattern
    for code in facility_types.FACILITY_TYPES:  # every code the bridge sends is named in the spec
        assert code in fac["type"]["description"]
    example = SPEC["paths"]["/v1/reports"]["post"]["requestBody"]["content"]["application/json"]["example"]
    assert schema.check_report(example)["facility"]["type"] in facility_types.FACILITY_TYPES


def test_every_documented_operation_answers_as_documented(intake):
    status, _, opened = call(intake.port, "POST", "/v1/reports", valid_report_body(),
                             headers={"Idempotency-Key": event_id()})
    assert status == 201
    called = 0
    for path, method, op in operations():
        headers = {}
        for param in map(resolve, op.get("parameters", ())):
            if param["in"] == "header" and param["name"] == "Idempotency-Key":
                headers["Idempotency-Key"] = event_id()
        body = None
        if "requestBody" in op:
            body = op["requestBody"]["content"]["application/json"]["example"]
        url = path.replace("{incident_id}", opened["incident_id"])
        status, _, answer = call(intake.port, method.upper(), url, body, headers=headers)
        documented = op["responses"]
        assert str(status) in documented, (method, path, status, answer)
        assert 200 <= status < 300, (method, path, status, answer)
        content = resolve(documented[str(status)]).get("content", {})
        if "application/json" in content:
            missing = required_keys(content["application/json"]["schema"]) - set(answer)
            assert not missing, (method, path, missing)
        else:
            assert "text/html" in content and answer.startswith("<!doctype html>")
        called += 1
    assert called == len(ROUTES)


def test_error_answers_have_the_documented_error_shape(intake):
    error_required = required_keys(SPEC["components"]["schemas"]["Error"])
    _, _, theirs = call(intake.port, "POST", "/v1/reports", valid_report_body(), token=OTHER_TOKEN,
                        headers={"Idempotency-Key": event_id()})
    update = {"kind": "cancel", "occurred_at": "2026-11-29T08:30:00Z"}
    cases = [
        ("GET", "/v1/incidents/no-such-incident", None, {}, "404"),
        ("POST", "/v1/reports", {"type": "fire"}, {"Idempotency-Key": event_id()}, "422"),
        ("POST", "/v1/reports", valid_report_body(), {}, "400"),
        ("GET", f"/v1/incidents/{theirs['incident_id']}", None, {}, "403"),
        ("POST", f"/v1/incidents/{theirs['incident_id']}/updates", update, {"Idempotency-Key": event_id()}, "403"),
        ("GET", "/v1/incidents", None, {"Authorization": "Bearer not-a-token-of-anyone"}, "401"),
    ]
    for method, path, body, headers, code in cases:
        status, _, answer = call(intake.port, method, path, body, headers=headers)
        assert str(status) == code, (method, path, answer)
        spec_path = re.sub(r"^/v1/incidents/[^/]+", "/v1/incidents/{incident_id}", path)
        assert code in SPEC["paths"][spec_path][method.lower()]["responses"]
        assert error_required <= set(answer)
