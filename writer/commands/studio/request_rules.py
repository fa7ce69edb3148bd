"""What the studio accepts from a request: sizes, media type, JSON shape, event ids, names.

Each rule turns a malformed value into a coded :class:`ConversionError` (never a Python
exception), so the handler can answer every bad request with a 4xx and a JSON error code.

Example:
    >>> content_length("12")
    12
    >>> content_length("²")
    Traceback (most recent call last):
    topology.vocabulary.errors.ConversionError: BAD_REQUEST: Content-Length '²' is not a byte count
    >>> json_object(b'{"a": [1, {"b": 2}]}', "application/json")
    {'a': [1, {'b': 2}]}
    >>> attachment("模型 \\"v1\\".zip")
    'attachment; filename="__ _v1_.zip"; filename*=UTF-8\\'\\'%E6%A8%A1%E5%9E%8B%20%22v1%22.zip'
"""
from __future__ import annotations

import json
import re
import urllib.parse
from typing import Any

from topology.vocabulary.errors import ConversionError

MAX_JSON_BYTES = 1 << 20  # a form is a few hundred bytes; metadata with labels a few KiB
MAX_JSON_DEPTH = 32  # the form nests 3 levels; metadata a few more
MAX_EVENT_ID_DIGITS = 9  # a job never has a billion events
MAX_NAME_BYTES = 255  # what Linux, macOS and Windows allow for one file name
MAX_FOLDER_PATH_BYTES = 1024  # with ROOT's own path, well inside every system's path limit
JSON_MEDIA_TYPE = "application/json"

_DIGITS = re.compile(r"[0-9]{1,15}")  # ASCII only: str.isdigit() also takes '²' and '٣'
_BRACKETS = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.S)


def bad_request(what: str, hint: str = "send what the studio's page sends") -> ConversionError:
    return ConversionError("BAD_REQUEST", what, hint)


def content_length(text: str | None) -> int | None:
    """The body size a request announces (``None`` when it announces none)."""
    if text is None:
        return None
    if not _DIGITS.fullmatch(text.strip()):
        raise bad_request(f"Content-Length {text[:40]!r} is not a byte count")
    return int(text)


def media_type(header: str | None) -> str:
    """``type/subtype`` of a Content-Type header, lower case, parameters dropped.

    Example:
        >>> media_type("Application/JSON; charset=utf-8"), media_type("text/plain; charset=application/json")
        ('application/json', 'text/plain')
    """
    return (header or "").split(";", 1)[0].strip().lower()


def json_depth(text: str) -> int:
    """How deep arrays and objects nest in JSON ``text`` (strings skipped), without parsing it."""
    depth = deepest = 0
    for token in _BRACKETS.findall(text):
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest


def json_object(raw: bytes, content_type: str | None) -> dict:
    """A request body as a JSON object: exact media type, at most 1 MiB, 32 levels, valid Unicode."""
    if media_type(content_type) != JSON_MEDIA_TYPE:
        raise ConversionError("UNSUPPORTED_MEDIA_TYPE", f"the request's Content-Type is {str(content_type)[:60]!r}",
                              "send the body as Content-Type: application/json")
    if len(raw) > MAX_JSON_BYTES:
        raise ConversionError("REQUEST_TOO_LARGE", f"the JSON body is {len(raw):,} bytes; at most {MAX_JSON_BYTES:,}",
                              "send a smaller form (metadata of a few KiB)")
    try:
        text = raw.decode("utf-8") if raw else "{}"
    except UnicodeDecodeError:
        raise bad_request("the JSON body is not UTF-8") from None
    if json_depth(text) > MAX_JSON_DEPTH:
        raise bad_request(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels", "flatten the metadata")
    try:
        value = json.loads(text, parse_constant=_no_constant, object_pairs_hook=_unique_keys)
        json.dumps(value, ensure_ascii=False).encode("utf-8")  # lone surrogates ("\ud800") cannot be written
    except ConversionError:
        raise
    except (ValueError, RecursionError):
        raise bad_request("the request body is not valid JSON") from None
    except UnicodeEncodeError:
        raise bad_request("the JSON body holds a lone surrogate (an invalid \\uD800-\\uDFFF escape)",
                          "send valid Unicode text") from None
    if not isinstance(value, dict):
        raise bad_request("the request body is not a JSON object")
    return value


def _no_constant(name: str) -> Any:
    raise bad_request(f"the JSON body holds {name}, which JSON does not have (model.json could not be written)",
                      "write numbers, or null")


def _unique_keys(pairs: list) -> dict:
    keys = [key for key, _ in pairs]
    if len(set(keys)) != len(keys):
        twice = next(key for key in keys if keys.count(key) > 1)
        raise bad_request(f"the JSON body names {twice[:60]!r} twice in one object", "give each key once")
    return dict(pairs)


def last_event_id(text: str | None) -> int:
    """The first event number to send to a reconnecting EventSource (0 without ``Last-Event-ID``)."""
    if text is None or text == "":
        return 0
    if not re.fullmatch(f"[0-9]{{1,{MAX_EVENT_ID_DIGITS}}}", text):
        raise bad_request(f"Last-Event-ID {text[:40]!r} is not an event number", "reconnect without Last-Event-ID")
    return int(text) + 1


def folder_name(text: Any, what: str = "output folder") -> str:
    """The one rule for folder names the studio creates: ``a/b`` of printable names.

    At most 1024 bytes; each ``/``-separated name is non-empty, printable (no control characters, no line or
    paragraph separators, no lone surrogates), has no backslash or colon (separators on
    Windows) and fits in 255 UTF-8 bytes. Whether the path stays inside ROOT is checked
    afterwards, by :meth:`writer.commands.studio.paths.Root.resolve`.

    Example:
        >>> folder_name("models/模型_out")
        'models/模型_out'
        >>> folder_name("a\\r\\nX-Injected: 1")
        Traceback (most recent call last):
        topology.vocabulary.errors.ConversionError: BAD_FOLDER_NAME: output folder 'a\\r\\nX-Injected: 1' has a control character or separator in 'a\\r\\nX-Injected: 1'
    """
    if not isinstance(text, str) or not text.strip():
        raise ConversionError("BAD_OPTION", f"no {what} given", "name a new folder, e.g. mnist_tfjs")
    path = text.strip()
    if len(path.encode("utf-8", "surrogatepass")) > MAX_FOLDER_PATH_BYTES:
        raise ConversionError("BAD_FOLDER_NAME", f"{what} {path[:60]!r}... is longer than {MAX_FOLDER_PATH_BYTES} bytes",
                              "use a shorter path, e.g. models/mnist_tfjs")
    for name in path.split("/"):
        if name and (not name.isprintable() or "\\" in name or ":" in name
                or len(name.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES):
            raise ConversionError("BAD_FOLDER_NAME", f"{what} {text[:80]!r} has a control character or separator "
                                  f"in {name[:80]!r}", "use printable names separated by '/', e.g. models/mnist_tfjs")
    return path


def attachment(file_name: str) -> str:
    """A Content-Disposition for downloading ``file_name``: RFC 6266 with an RFC 5987 ``filename*``.

    The plain ``filename`` is an ASCII stand-in for old clients (every other character is ``_``);
    ``filename*`` carries the exact name, percent-encoded, so no name can break the header.
    """
    fallback = "".join(c if " " <= c <= "~" and c not in '"\\%' else "_" for c in file_name)
    exact = urllib.parse.quote(file_name.encode("utf-8", "surrogatepass"), safe="")
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{exact}"
