"""Annotation JSON files -> their records, fast, bounded in memory, and never crashing on bad input.

The fast path is msgspec: one pass splits the file's record container (a top-level array, the
array under a key such as `data` or `questions`, or an object of records) into `msgspec.Raw`
slices without building Python objects, then each record is decoded on its own. A local file is
memory-mapped rather than read, so a 1.5 GB ShareGPT4V file costs page cache, not process memory,
and only the batch of records in hand exists as Python objects.

When msgspec cannot split the file (a syntax error, invalid UTF-8, a record nested deeper than the
decoder allows, a file cut short) the tolerant scanner below takes over: it finds the records by
bracket depth (strings skipped with one regex each, no recursion), so every record before and after
the bad one is still read and the bad one becomes a quarantined entry with the reason. ijson is not
used here: a record nested 100,000 levels deep exhausts memory inside it.
"""
from __future__ import annotations

import codecs
import mmap
import re
from dataclasses import dataclass
from typing import Iterator

import msgspec

from pipeline.storage import Root

MMAP_ABOVE_BYTES = 32 * 2**20  # local files larger than this are memory-mapped instead of read

_ARRAY = msgspec.json.Decoder(list[msgspec.Raw])
_OBJECT = msgspec.json.Decoder(dict[str, msgspec.Raw])
_ANY = msgspec.json.Decoder()


class FileProblem(Exception):
    """A whole file (or its record container) is unusable: reason is a quarantine reason
    (`unreadable_file` or `wrong_shape`), rows the number of records it held when knowable."""

    def __init__(self, reason: str, detail: str, rows: int | None = None) -> None:
        super().__init__(detail)
        self.reason, self.detail, self.rows = reason, detail, rows


@dataclass(slots=True)
class BadRecord:
    """A record that could not be decoded: yielded in its place so the reader can quarantine it."""

    detail: str
    text: str  # the start of its bytes, for the quarantine row


def read_buffer(root: Root, rel: str):
    """The file's bytes: memory-mapped when local and large, read whole otherwise."""
    target, sub = root._resolve(rel)
    if target.is_local:
        path = target.path(sub)
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            if size > MMAP_ABOVE_BYTES:
                return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
            f.seek(0)
            return f.read()
    with target.fs.open(target.path(sub), "rb") as f:
        return f.read()


def decode(raw) -> object:
    """One record -> Python objects; a `BadRecord` when it is not valid JSON (or too deep)."""
    try:
        return _ANY.decode(raw)
    except (msgspec.DecodeError, RecursionError, ValueError) as exc:  # ValueError: bad UTF-8
        return BadRecord(_why(exc), _head(raw))


def load(root: Root, rel: str):
    """A small JSON file parsed whole; FileProblem when it is not valid JSON."""
    try:
        buf = read_buffer(root, rel)
    except OSError as exc:
        raise FileProblem("unreadable_file", f"cannot read the file: {type(exc).__name__}: {exc}") from exc
    value = decode(buf)
    if isinstance(value, BadRecord):
        raise FileProblem("unreadable_file", f"the file is not valid JSON: {value.detail}")
    return value


def records(root: Root, rel: str, key: str | None = None, kind: str = "array",
            raw: bool = False) -> Iterator[tuple[object, object]]:
    """(index or key, decoded record or BadRecord) of the records in the file's container:
    the top level (key None) or the value of `key` in a top-level object; `kind` says whether the
    container is an "array" of records or an "object" mapping ids to records. With `raw` the
    records come undecoded (bytes-like JSON text, for a typed decoder). Raises FileProblem for a
    file that cannot be read or whose container is not there with that kind."""
    try:
        buf = read_buffer(root, rel)
    except OSError as exc:
        raise FileProblem("unreadable_file", f"cannot read the file: {type(exc).__name__}: {exc}") from exc
    try:
        yield from _records(buf, key, kind, (lambda x: x) if raw else decode)
    finally:
        if isinstance(buf, mmap.mmap):
            try:
                buf.close()
            except BufferError:
                pass  # a Raw slice still refers to it: the mapping goes with the last reference


def raw_list(root: Root, rel: str):
    """The records of a file whose top level is an array, as a list of undecoded `msgspec.Raw`
    (one pass, no Python object per record beyond the Raw): the fast path of a large file. None
    when the file is not one valid JSON array (then `records` says what is wrong, record by record).
    The Raw slices keep the file's buffer alive."""
    try:
        buf = read_buffer(root, rel)
    except OSError:
        return None
    if _first_byte(buf, 0) != ord("["):
        return None
    try:
        return _ARRAY.decode(buf)
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None


def _records(buf, key: str | None, kind: str, finish) -> Iterator[tuple[object, object]]:
    container = None
    if kind == "array":
        container = _container(buf, key, kind)
    elif key is None and _first_byte(buf, 0) != ord("{"):
        raise _shape_problem(buf, _first_byte(buf, 0), "an object of records")
    if container is not None:
        container, side = container
        yield from enumerate(map(finish, container))
        if side:  # the records were fine, another part of the file was not
            raise FileProblem("unreadable_file", f"the file is not valid JSON outside its records ({side})", rows=0)
        return
    # The tolerant scanner: for a file msgspec cannot split, and for an object of records (a dict
    # would merge a repeated key away silently: a problem listed twice must be seen twice).
    error = _invalid(buf)
    bad = 0
    for k, value in _scan_records(buf, key, kind, finish):
        bad += type(value) is BadRecord
        yield k, value
    if error and not bad:  # e.g. bytes after the document: nothing lost, but said
        raise FileProblem("unreadable_file", f"the file is not valid JSON as a whole ({error}); its records "
                          "were read one by one", rows=0)


def _invalid(buf) -> str | None:
    """Why the whole buffer is not one valid JSON document (None when it is)."""
    try:
        msgspec.json.decode(buf, type=msgspec.Raw)
    except (msgspec.DecodeError, RecursionError, ValueError) as exc:
        return _why(exc)
    return _not_utf8(buf)


def _not_utf8(buf, chunk: int = 1 << 20) -> str | None:
    """Where the buffer stops being UTF-8 (None when it is all UTF-8). msgspec checks a string's
    bytes only when it decodes it: a bad byte in a part nobody reads (a key beside the records)
    passes its structural parse. Checked in chunks so a large file is never copied whole."""
    check = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(buf)
    for at in range(0, len(view), chunk):
        try:
            check.decode(view[at:at + chunk], final=at + chunk >= len(view))
        except UnicodeDecodeError as exc:
            return f"a byte that is not UTF-8 near byte {at + exc.start}"
    return None


def _container(buf, key: str | None, kind: str):
    """(the container split by msgspec: a list or dict of Raw, why the rest of the file is not
    valid or None); None when msgspec cannot parse the file; FileProblem when it parses but the
    shape is wrong."""
    top = _first_byte(buf, 0)
    try:
        if key is None:
            return _expect(buf, top, kind, "the file's top level"), None
        if top != ord("{"):
            raise _shape_problem(buf, top, f"an object with a {key!r} {_noun(kind)}")
        outer = _OBJECT.decode(buf)
        if key not in outer:
            raise FileProblem("wrong_shape", f"the top-level object has no {key!r} key "
                              f"(keys: {', '.join(sorted(outer)[:10]) or 'none'})", rows=None)
        inner = memoryview(outer[key])
        side = None
        for other, raw in outer.items():  # the small parts beside the records (`info`, ...)
            if other != key and type(value := decode(raw)) is BadRecord:
                side = f"{other!r}: {value.detail}"
        return _expect(inner, _first_byte(inner, 0), kind, f"{key!r}"), side
    except (msgspec.DecodeError, RecursionError, ValueError):
        return None


def _expect(buf, first: int | None, kind: str, what: str):
    if kind == "array" and first == ord("["):
        return _ARRAY.decode(buf)
    if kind == "object" and first == ord("{"):
        return _OBJECT.decode(buf)
    raise _shape_problem(buf, first, f"{'a list' if kind == 'array' else 'an object'} of records", what)


def _shape_problem(buf, first: int | None, expected: str, what: str = "the file's top level") -> FileProblem:
    if first not in (ord("["), ord("{")) and first is not None:
        value = decode(buf)
        if type(value) is BadRecord:
            return FileProblem("unreadable_file", f"the file is not valid JSON: {value.detail}")
    found, rows = _describe(buf, first)
    return FileProblem("wrong_shape", f"{what} is {found}; expected {expected}", rows=rows)


def _describe(buf, first: int | None) -> tuple[str, int | None]:
    try:
        if first == ord("["):
            n = len(_ARRAY.decode(buf))
            return f"a list of {n} items", n
        if first == ord("{"):
            n = len(_OBJECT.decode(buf))
            return f"an object with {n} keys", n
    except (msgspec.DecodeError, RecursionError, ValueError):
        return ("a list" if first == ord("[") else "an object") + " that is not valid JSON", None
    if first is None:
        return "empty", 0
    return "a single value, not a container", 1


def _noun(kind: str) -> str:
    return "list" if kind == "array" else "object"


def _first_byte(buf, start: int) -> int | None:
    n = len(buf)
    i = start
    if i < n and i == 0 and bytes(buf[:3]) == b"\xef\xbb\xbf":  # a UTF-8 byte order mark
        i = 3
    while i < n and buf[i] in b" \t\r\n":
        i += 1
    return buf[i] if i < n else None


def _why(exc: BaseException) -> str:
    if isinstance(exc, RecursionError):
        return "nested deeper than the JSON decoder allows"
    if isinstance(exc, UnicodeDecodeError):
        return f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
    return str(exc)


def _head(raw, n: int = 300) -> str:
    return bytes(memoryview(raw)[:n]).decode("utf-8", errors="replace")


# ---- the tolerant scanner -------------------------------------------------------------------------

_TOKEN = re.compile(rb'["\[\]{},]')
_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.S)
_WS = b" \t\r\n"


def _scan_records(buf, key: str | None, kind: str, finish=None) -> Iterator[tuple[object, object]]:
    """Records found by bracket depth; a part that does not decode is a BadRecord; a file cut
    short ends with a FileProblem naming how many records were read before it."""
    start = _first_byte_pos(buf, 0)
    if key is not None:
        if start is None or buf[start] != ord("{"):
            raise FileProblem("unreadable_file", "the file is not a JSON object (and not valid JSON)")
        found = None
        for seg in _segments(buf, start):
            if isinstance(seg, FileProblem):
                raise seg
            k, value = _member(buf, seg)
            if k == key:
                found = value
                break
        if found is None:
            raise FileProblem("unreadable_file", f"no readable {key!r} member in the file (not valid JSON)")
        start = _first_byte_pos(buf, found[0])
    if start is None:
        raise FileProblem("wrong_shape", "the file is empty", rows=0)
    opener = buf[start]
    if (kind == "array" and opener != ord("[")) or (kind == "object" and opener != ord("{")):
        raise FileProblem("wrong_shape", f"the container is not {'a list' if kind == 'array' else 'an object'} "
                          "of records (and the file is not valid JSON)")
    count = 0
    for seg in _segments(buf, start):
        if isinstance(seg, FileProblem):
            seg.detail += f"; {count} records before it were read"
            raise seg
        if kind == "array":
            yield count, finish(buf[seg[0]:seg[1]])
        else:
            k, value = _member(buf, seg)
            if k is None:
                yield f"#{count}", BadRecord("not a \"key\": value member", _head(buf[seg[0]:seg[1]]))
            else:
                yield k, finish(buf[value[0]:value[1]])
        count += 1


def _first_byte_pos(buf, start: int) -> int | None:
    n = len(buf)
    i = start
    if i == 0 and bytes(buf[:3]) == b"\xef\xbb\xbf":
        i = 3
    while i < n and buf[i] in _WS:
        i += 1
    return i if i < n else None


def _segments(buf, start: int) -> Iterator[tuple[int, int] | FileProblem]:
    """(start, end) of each depth-1 member of the container opening at `start`."""
    depth = 0
    seg = start + 1
    i = start + 1
    while True:
        m = _TOKEN.search(buf, i)
        if m is None:
            yield FileProblem("unreadable_file", f"the file ends inside its record container (cut short after "
                              f"byte {len(buf)})")
            return
        j = m.start()
        c = buf[j]
        if c == 0x22:  # a string: skip it whole
            sm = _STRING.match(buf, j)
            if sm is None:
                yield FileProblem("unreadable_file", f"a string starting at byte {j} never ends (file cut short)")
                return
            i = sm.end()
            continue
        if c in (0x5B, 0x7B):  # [ {
            depth += 1
        elif c in (0x5D, 0x7D):  # ] }
            if depth == 0:
                a, b = _strip(buf, seg, j)
                if b > a:
                    yield a, b
                return
            depth -= 1
        elif depth == 0:  # a comma between members
            a, b = _strip(buf, seg, j)
            yield a, b
            seg = j + 1
        i = j + 1


def _strip(buf, a: int, b: int) -> tuple[int, int]:
    while a < b and buf[a] in _WS:
        a += 1
    while b > a and buf[b - 1] in _WS:
        b -= 1
    return a, b


def _member(buf, seg: tuple[int, int]) -> tuple[str | None, tuple[int, int] | None]:
    """("key", (value start, value end)) of an object member segment."""
    a, b = seg
    sm = _STRING.match(buf, a)
    if sm is None:
        return None, None
    key = decode(buf[a:sm.end()])
    rest = _first_byte_pos(buf, sm.end())
    if not isinstance(key, str) or rest is None or rest >= b or buf[rest] != ord(":"):
        return None, None
    return key, _strip(buf, rest + 1, b)
