"""The intake's web page: it lists what arrived, and shows client data as text, never as markup."""

from __future__ import annotations

import dataclasses
import re

from intake_harness import SITE, call, make_report


def page(server) -> str:
    status, headers, text = call(server.port, "GET", "/", token=None)
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    return text


def test_the_page_lists_an_incident_with_its_details(fresh_intake, make_sink):
    sink = make_sink(fresh_intake)
    assert "no incidents yet" in page(fresh_intake)
    opened = sink.send(make_report(cause="smoke", confidence=0.87))
    html = page(fresh_intake)
    assert 'http-equiv="refresh" content="2"' in html
    row = re.search(r"<tr class=\"open\">(.*?)</tr>", html, re.S).group(1)
    for text in (opened.ref, "smoke", "12 Láng Hạ, Đống Đa, Hà Nội", "Toà nhà A / 3 / 301",
                 "21.028511, 105.804817", "0.87", "open", "hn-a-0001"):
        assert text in row, text
    assert "https://www.openstreetmap.org/?mlat=21.028511&amp;mlon=105.804817" in row


def test_the_page_shows_a_cancelled_incident_as_cancelled(fresh_intake, make_sink):
    sink = make_sink(fresh_intake)
    alarm = make_report()
    opened = sink.send(alarm)
    sink.send(make_report(type="cancel", references=alarm.event_id, incident_id=opened.ref))
    html = page(fresh_intake)
    assert "<tr class=\"cancelled\">" in html and "Đã huỷ / cancelled" in html


def test_markup_in_client_data_is_escaped(fresh_intake, make_sink):
    evil = "<script>alert('x')</script>"
    site = dataclasses.replace(SITE, building=evil, address='"><img src=x onerror=alert(1)>', room="<b>1</b>")
    assert make_sink(fresh_intake).send(make_report(site=site)).status == "accepted"
    html = page(fresh_intake)
    assert "<script>" not in html and "<img" not in html and "<b>1</b>" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    assert "&quot;&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    # The same data stays intact in the API.
    _, _, listing = call(fresh_intake.port, "GET", "/v1/incidents")
    assert listing["incidents"][0]["building"] == evil
