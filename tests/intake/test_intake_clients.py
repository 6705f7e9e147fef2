"""Clients of the intake: each with its own token, its own idempotency keys and references, and its
own incidents, which no other client may read or update; the tokens file; a file from before clients."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from intake_harness import OTHER_TOKEN, REPO, TOKEN, call, event_id, valid_report_body

from intake import clients
from intake.store import body_hash
from stack.intake import Intake
from stack.procs import child_env


def post(server, body, key, token=TOKEN, path="/v1/reports"):
    return call(server.port, "POST", path, body, headers={"Idempotency-Key": key}, token=token)


def cancel_body(references: str | None = None) -> dict:
    return dict(valid_report_body(), event_type="cancel", cause="button", references=references)


def update_body() -> dict:
    return {"kind": "cancel", "reason": "false alarm", "occurred_at": "2026-11-29T08:31:00Z",
            "reporter": {"device_id": "hn-a-0002"}}


def test_every_v1_call_needs_a_valid_token(intake):
    status, _, opened = post(intake, valid_report_body(), event_id())
    assert status == 201
    inc = opened["incident_id"]
    calls = [
        ("POST", "/v1/reports", valid_report_body()),
        ("POST", f"/v1/incidents/{inc}/updates", update_body()),
        ("GET", "/v1/incidents", None),
        ("GET", f"/v1/incidents/{inc}", None),
        ("GET", "/v1/tests", None),
    ]
    bad = [None, "wrong-token-of-nobody", TOKEN[:-1], TOKEN + "x"]
    for method, path, body in calls:
        for token in bad:
            status, headers, answer = call(intake.port, method, path, body, token=token,
                                           headers={"Idempotency-Key": event_id()})
            assert status == 401 and answer["error"] == "unauthorized", (method, path, token, answer)
            assert headers["WWW-Authenticate"].startswith("Bearer")
        # the right token under another scheme is no token
        status, _, _ = call(intake.port, method, path, body, token=None,
                            headers={"Idempotency-Key": event_id(), "Authorization": f"Basic {TOKEN}"})
        assert status == 401
    # nothing was written by any of those
    _, _, got = call(intake.port, "GET", f"/v1/incidents/{inc}")
    assert got["updates"] == [] and got["status"] == "open"


def test_two_clients_with_the_same_key_get_two_incidents(intake):
    key = event_id()
    a_status, _, a = post(intake, valid_report_body(), key, TOKEN)
    b_status, _, b = post(intake, valid_report_body(), key, OTHER_TOKEN)
    assert (a_status, b_status) == (201, 201)
    assert a["incident_id"] != b["incident_id"]
    # each replay is answered with the client's own incident
    assert post(intake, valid_report_body(), key, TOKEN)[2]["incident_id"] == a["incident_id"]
    assert post(intake, valid_report_body(), key, OTHER_TOKEN)[2]["incident_id"] == b["incident_id"]
    _, _, got_a = call(intake.port, "GET", f"/v1/incidents/{a['incident_id']}", token=TOKEN)
    _, _, got_b = call(intake.port, "GET", f"/v1/incidents/{b['incident_id']}", token=OTHER_TOKEN)
    assert (got_a["client"], got_a["idempotency_key"]) == ("bridge-a", key)
    assert (got_b["client"], got_b["idempotency_key"]) == ("bridge-b", key)
    # and a conflict is judged against the client's own use of the key only
    changed = dict(valid_report_body(), cause="heat")
    status, _, answer = post(intake, changed, key, OTHER_TOKEN)
    assert status == 409 and answer["incident_id"] == b["incident_id"]


def test_references_resolve_only_within_the_client(intake):
    key = event_id()
    _, _, a = post(intake, valid_report_body(), key, TOKEN)
    # another client's cancel naming A's key does not touch A's incident: it opens its own
    status, _, b = post(intake, cancel_body(references=key), event_id(), OTHER_TOKEN)
    assert status == 201 and b["incident_id"] != a["incident_id"] and "reference unknown" in b["note"]
    _, _, got_a = call(intake.port, "GET", f"/v1/incidents/{a['incident_id']}", token=TOKEN)
    assert got_a["status"] == "open" and got_a["updates"] == []
    # A's own cancel finds A's incident
    status, _, mine = post(intake, cancel_body(references=key), event_id(), TOKEN)
    assert status == 201 and mine["incident_id"] == a["incident_id"] and "note" not in mine
    _, _, got_a = call(intake.port, "GET", f"/v1/incidents/{a['incident_id']}", token=TOKEN)
    assert got_a["status"] == "cancelled"


def test_only_the_reporting_client_may_update_or_read_an_incident(intake):
    _, _, a = post(intake, valid_report_body(), event_id(), TOKEN)
    inc = a["incident_id"]
    status, _, answer = post(intake, update_body(), event_id(), OTHER_TOKEN, path=f"/v1/incidents/{inc}/updates")
    assert status == 403 and answer["error"] == "not_your_incident" and answer["incident_id"] == inc
    assert "another client" in answer["message"]
    status, _, answer = call(intake.port, "GET", f"/v1/incidents/{inc}", token=OTHER_TOKEN)
    assert status == 403 and answer["error"] == "not_your_incident"
    _, _, listing = call(intake.port, "GET", "/v1/incidents?limit=1000", token=OTHER_TOKEN)
    assert inc not in [i["incident_id"] for i in listing["incidents"]]
    assert {i["client"] for i in listing["incidents"]} <= {"bridge-b"}
    # untouched, and its owner may still update it
    _, _, got = call(intake.port, "GET", f"/v1/incidents/{inc}", token=TOKEN)
    assert got["status"] == "open" and got["updates"] == []
    key = event_id()
    status, _, answer = post(intake, update_body(), key, TOKEN, path=f"/v1/incidents/{inc}/updates")
    assert status == 201 and answer["status"] == "cancelled"
    _, _, got = call(intake.port, "GET", f"/v1/incidents/{inc}", token=TOKEN)
    assert [u["idempotency_key"] for u in got["updates"]] == [key]


def test_test_messages_are_listed_for_their_client_only(intake):
    body = dict(valid_report_body(), event_type="test", cause="selftest")
    _, _, mine = post(intake, body, event_id(), OTHER_TOKEN)
    _, _, a_tests = call(intake.port, "GET", "/v1/tests?limit=1000", token=TOKEN)
    _, _, b_tests = call(intake.port, "GET", "/v1/tests?limit=1000", token=OTHER_TOKEN)
    assert mine["test_id"] not in [t["test_id"] for t in a_tests["tests"]]
    [t] = [t for t in b_tests["tests"] if t["test_id"] == mine["test_id"]]
    assert t["client"] == "bridge-b"


# The schema of an intake from before clients, as such a file holds it.
OLD_SCHEMA = """
CREATE TABLE incidents (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, created_at TEXT NOT NULL,
    updated_at TEXT NOT NULL, status TEXT NOT NULL, event_type TEXT NOT NULL, report TEXT NOT NULL);
CREATE TABLE updates (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE,
    incident_id TEXT NOT NULL REFERENCES incidents(id), kind TEXT NOT NULL, received_at TEXT NOT NULL,
    body TEXT NOT NULL);
CREATE INDEX updates_by_incident ON updates(incident_id, seq);
CREATE TABLE tests (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, received_at TEXT NOT NULL,
    report TEXT NOT NULL);
CREATE TABLE idempotency (key TEXT PRIMARY KEY, scope TEXT NOT NULL, body_hash TEXT NOT NULL,
    incident_id TEXT NOT NULL, response TEXT NOT NULL, created_at TEXT NOT NULL);
"""


def old_database(path) -> dict:
    """An intake file from before clients: one incident with a cancel, one test message, their keys."""
    t = "2026-11-29T08:30:00.300Z"
    inc, test_id = "114-20261129-000001", "114-test-20261129-000001"
    report, test = valid_report_body(), dict(valid_report_body(), event_type="test", cause="selftest")
    update = update_body()
    keys = {"report": "hn-a-0002-00000001", "update": "hn-a-0002-00000002", "test": "hn-a-0002-00000003"}
    db = sqlite3.connect(path)
    with db:
        db.executescript(OLD_SCHEMA)
        db.execute("INSERT INTO incidents VALUES (1, ?, ?, ?, 'cancelled', 'alarm', ?)",
                   (inc, t, t, json.dumps(report)))
        db.execute("INSERT INTO updates VALUES (1, ?, ?, 'cancel', ?, ?)", (f"{inc}-u1", inc, t, json.dumps(update)))
        db.execute("INSERT INTO tests VALUES (1, ?, ?, ?)", (test_id, t, json.dumps(test)))
        answers = [
            (keys["report"], "report", body_hash("report", report), inc,
             {"incident_id": inc, "status": "open", "received_at": t}),
            (keys["update"], f"update:{inc}", body_hash(f"update:{inc}", update), inc,
             {"incident_id": inc, "update_id": f"{inc}-u1", "kind": "cancel", "status": "cancelled",
              "received_at": t}),
            (keys["test"], "report", body_hash("report", test), test_id,
             {"test_id": test_id, "status": "test", "received_at": t}),
        ]
        for key, scope, digest, ref, answer in answers:
            db.execute("INSERT INTO idempotency VALUES (?, ?, ?, ?, ?, ?)", (key, scope, digest, ref,
                                                                           json.dumps(answer), t))
    db.close()
    return {"incident": inc, "test": test_id, "report": report, "keys": keys}


def test_a_database_from_before_clients_opens_and_is_the_default_clients(tmp_path):
    db = tmp_path / "intake.db"
    old = old_database(db)
    inc, keys = old["incident"], old["keys"]
    with Intake(db, clients={"default": TOKEN, "bridge-b": OTHER_TOKEN}) as server:
        status, _, got = call(server.port, "GET", f"/v1/incidents/{inc}", token=TOKEN)
        assert status == 200 and got["client"] == "default" and got["status"] == "cancelled"
        assert got["idempotency_key"] == keys["report"]
        assert [(u["kind"], u["idempotency_key"]) for u in got["updates"]] == [("cancel", keys["update"])]
        # the old keys are still the default client's: a retry is a replay, not a new incident
        status, headers, again = post(server, old["report"], keys["report"], TOKEN)
        assert status == 200 and again["incident_id"] == inc and headers["Idempotent-Replayed"] == "true"
        status, _, answer = post(server, update_body(), keys["update"], TOKEN, path=f"/v1/incidents/{inc}/updates")
        assert status == 200 and answer["update_id"] == f"{inc}-u1"
        _, _, tests = call(server.port, "GET", "/v1/tests", token=TOKEN)
        assert [(t["test_id"], t["client"]) for t in tests["tests"]] == [(old["test"], "default")]
        # another client's same key is its own new incident, numbered after the old ones
        status, _, other = post(server, old["report"], keys["report"], OTHER_TOKEN)
        assert status == 201 and other["incident_id"].endswith("-000002")
        assert call(server.port, "GET", f"/v1/incidents/{inc}", token=OTHER_TOKEN)[0] == 403
    # and the file reopens as it now is
    with Intake(db, clients={"default": TOKEN, "bridge-b": OTHER_TOKEN}) as server:
        _, _, listing = call(server.port, "GET", "/v1/incidents", token=TOKEN)
        assert [i["incident_id"] for i in listing["incidents"]] == [inc]


def start_with(tmp_path, tokens_text: str | None, mode: int = 0o600, *extra: str) -> subprocess.CompletedProcess:
    args = [sys.executable, "-m", "intake.server", "--port", "0", "--db", str(tmp_path / "intake.db"), "--quiet"]
    if tokens_text is not None:
        path = tmp_path / "intake.tokens"
        path.write_text(tokens_text)
        path.chmod(mode)
        args += ["--tokens", str(path)]
    args += extra
    env = {k: v for k, v in child_env().items() if k != "BAOCHAY_INTAKE_TOKENS"}
    return subprocess.run(args, cwd=REPO, env=env, capture_output=True, text=True, timeout=60)


A = "a-token-of-sixteen-chars"
B = "b-token-of-sixteen-chars"


@pytest.mark.parametrize("text, mode, says", [
    (f"bridge-a {A} extra\n", 0o600, "want `client_id token`"),
    (f"bridge-a {A}\nbridge-a {B}\n", 0o600, "'bridge-a' is listed twice (first on line 1)"),
    (f"bridge-a {A}\nbridge-b {A}\n", 0o600, "'bridge-b' has the same token as 'bridge-a'"),
    ("bridge-a short\n", 0o600, "must be 16-256"),
    (f"bridge/a {A}\n", 0o600, "client id must be"),
    ("# nobody yet\n\n", 0o600, "no clients"),
    (f"bridge-a {A}\n", 0o644, "readable by others (mode 0644); chmod 600"),
    (None, 0o600, "no tokens file: give --tokens FILE"),
])
def test_a_bad_tokens_file_stops_the_server_in_one_line(tmp_path, text, mode, says):
    done = start_with(tmp_path, text, mode)
    assert done.returncode != 0 and "listening" not in done.stdout
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], done.stderr
    assert A not in done.stderr and B not in done.stderr  # a token never goes to a log


def test_an_unreadable_tokens_file_stops_the_server_in_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "intake.server", "--port", "0", "--db", str(tmp_path / "x.db"),
                           "--tokens", str(tmp_path / "absent.tokens")], cwd=REPO, env=child_env(),
                          capture_output=True, text=True, timeout=60)
    assert done.returncode != 0
    [line] = done.stderr.strip().splitlines()
    assert "absent.tokens: cannot read it" in line


def test_the_tokens_file_takes_comments_and_names_each_client():
    text = f"# the intake's clients\n\nbridge-a {A}   # Hà Nội\n  bridge-b\t{B}\n"
    known = clients.Clients(clients.parse(text, "t"))
    assert known.ids == ["bridge-a", "bridge-b"]
    assert (known.who(A), known.who(B), known.who(A[:-1]), known.who("")) == ("bridge-a", "bridge-b", None, None)


def test_the_harness_writes_the_tokens_file_for_its_owner_only(tmp_path):
    server = Intake(tmp_path / "intake.db")
    with server:
        assert os.stat(server.tokens_path).st_mode & 0o077 == 0
        assert server.tokens_path.read_text() == f"{server.client} {server.token}\n"
        assert server.token not in " ".join(server.process.cmd)  # never on a command line
        assert server.incidents() == []
