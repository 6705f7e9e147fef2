"""CAP 1.2 sink: one alert per report, POSTed to a command centre's endpoint or dropped into a spool directory.

Alarm -> Alert; escalation (prealarm -> alarm) and restore -> Update; cancel -> Cancel. Updates and cancels
reference the earlier alert as "sender,identifier,sent"; the sink remembers each alert's `sent` (in memory,
and in `state_path` as JSON lines when set) because a report only names the event it refers to.

HTTP: 2xx accepted; 408, 429, 5xx, timeouts and connection errors retry; any other 4xx is refused.
Spool: `<identifier>.xml`, written to a temporary name then renamed, so a reader never sees half a file;
an identifier already in the spool is accepted again without rewriting it.
"""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from ..report import Outcome, Report
from . import cap_xml

CONTENT_TYPE = "application/cap+xml"


class SentBook:
    """identifier -> the `sent` of the alert that carried it."""

    def __init__(self, path: str | None):
        self.path = Path(path) if path else None
        self.sent: dict[str, str] = {}
        if self.path and self.path.exists():
            for line in self.path.read_text().splitlines():
                try:
                    rec = json.loads(line)
                    self.sent[rec["id"]] = rec["sent"]
                except (ValueError, KeyError, TypeError):
                    continue  # a torn last line after a crash

    def get(self, identifier: str) -> str | None:
        return self.sent.get(identifier)

    def record(self, identifier: str, sent: str) -> None:
        if self.sent.get(identifier) == sent:
            return
        self.sent[identifier] = sent
        if self.path:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps({"id": identifier, "sent": sent}) + "\n")
                f.flush()
                os.fsync(f.fileno())


class CapSink:
    def __init__(
        self,
        name: str,
        url: str | None = None,
        spool_dir: str | None = None,
        sender: str = "baochay-edge@localhost",
        timeout_s: float = 5,
        sender_name: str = "Báo cháy 114 Edge",
        identifier_prefix: str = "baochay-edge",
        state_path: str | None = None,
        button: str = "fire",
        utc_offset_h: float = 7,
    ):
        if bool(url) == bool(spool_dir):
            raise ValueError("give exactly one of url or spool_dir")
        for what, value in (("sender", sender), ("identifier_prefix", identifier_prefix)):
            if not cap_xml.IDENTIFIER_OK.fullmatch(value):
                raise ValueError(f"{what} must not contain spaces, commas, '<' or '&'")
        if button not in ("fire", "panic"):
            raise ValueError("button must be fire or panic")
        self.name, self.url, self.sender = name, url, sender
        self.spool = Path(spool_dir) if spool_dir else None
        self.timeout_s = float(timeout_s)
        self.sender_name, self.identifier_prefix = sender_name, identifier_prefix
        self.panic = button == "panic"
        self.utc_offset_h = utc_offset_h
        self.book = SentBook(state_path)
        self.last_xml = b""  # the last alert built, for logs and tests
        # straight to the endpoint: an http_proxy in the environment must not reroute alarms
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def render(self, report: Report) -> tuple[str, bytes]:
        """(identifier, XML) for a report, resolving what it references."""
        refs, note = [], ""
        for event_id in dict.fromkeys(e for e in (report.incident_key, report.references) if e):
            if event_id == report.event_id:
                continue
            ident = cap_xml.identifier_for(event_id, self.identifier_prefix)
            sent = self.book.get(ident)
            if sent is None and event_id == report.references:
                # never sent through this sink (or its state was lost): reference it with the best time
                # we have rather than drop the link, and say so
                sent = cap_xml.cap_time(report.occurred_at, self.utc_offset_h)
                note = f"sent time of {ident} is not known to this bridge; estimated"
            if sent is not None:
                refs.append((ident, sent))
        identifier, sent, xml = cap_xml.build(
            report,
            self.sender,
            refs,
            sender_name=self.sender_name,
            identifier_prefix=self.identifier_prefix,
            panic=self.panic,
            utc_offset_h=self.utc_offset_h,
            note=note,
        )
        self.book.record(identifier, sent)
        self.last_xml = xml
        return identifier, xml

    def send(self, report: Report) -> Outcome:
        identifier, xml = self.render(report)
        if self.spool is not None:
            return self._spool(self.spool, identifier, xml)
        assert self.url is not None
        return self._post(self.url, identifier, xml)

    def close(self) -> None:
        pass

    def _spool(self, spool: Path, identifier: str, xml: bytes) -> Outcome:
        final = spool / f"{identifier}.xml"
        if final.exists():
            return Outcome.accepted(ref=identifier, detail="already in the spool")
        try:
            spool.mkdir(parents=True, exist_ok=True)
            tmp = spool / f".{identifier}.xml.tmp"
            with open(tmp, "wb") as f:
                f.write(xml)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, final)
        except OSError as e:
            return Outcome.retry(f"spool {spool}: {e}")
        return Outcome.accepted(ref=identifier, detail=f"spooled {final.name}")

    def _post(self, url: str, identifier: str, xml: bytes) -> Outcome:
        request = urllib.request.Request(url, data=xml, method="POST", headers={"Content-Type": CONTENT_TYPE})
        try:
            with self.opener.open(request, timeout=self.timeout_s) as response:
                return Outcome.accepted(ref=identifier, detail=f"HTTP {response.status}")
        except urllib.error.HTTPError as e:
            detail = f"HTTP {e.code} {e.reason}"
            if e.code in (408, 429) or e.code >= 500:
                return Outcome.retry(detail)
            return Outcome.refused(detail)
        except (urllib.error.URLError, OSError) as e:  # refused, reset, timeout
            return Outcome.retry(f"POST {url}: {getattr(e, 'reason', e)}")
