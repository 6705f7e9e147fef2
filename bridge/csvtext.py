"""The text of a CSV file as spreadsheets write it: UTF-8 with or without a BOM ("CSV UTF-8"), or
UTF-16 with a BOM ("Unicode text", which is also tab-separated). Anything else is refused with one line
that says what to do, never a traceback. Used by `baochay-bridge devices import` and
`baochay-provision new-device --csv`."""

from __future__ import annotations

import codecs
import csv
import io
from pathlib import Path


class CsvTextError(ValueError):
    pass


def read_text(path: str | Path) -> str:
    try:
        raw = Path(path).read_bytes()
    except OSError as e:
        raise CsvTextError(f"{path}: cannot read ({e.strerror})") from None
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError:
            raise CsvTextError(f"{path}: starts as UTF-16 but is not valid UTF-16") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        line = raw[:e.start].count(b"\n") + 1
        raise CsvTextError(
            f"{path}: line {line}: not UTF-8 (byte 0x{raw[e.start]:02x}); save it from the spreadsheet as "
            f"'CSV UTF-8' or 'Unicode text'") from None


def dict_reader(path: str | Path) -> csv.DictReader:
    """A DictReader over the file's text; tab-separated when its first line has tabs and no commas."""
    text = read_text(path)
    first = text.split("\n", 1)[0]
    delimiter = "\t" if "\t" in first and "," not in first else ","
    return csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
