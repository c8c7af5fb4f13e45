"""GeoQA+: geometry problems with diagrams, four-way multiple choice. Two released forms are read.

1. The original release (GeoQA, chen-judge/GeoQA; GeoQA+, SCNU203/GeoQA-Plus): pickled lists of
   problem dicts, e.g. `GeoQA2.2/{train,dev,test}.pk` (GeoQA+ also ships `Mix-train.pk`,
   `Backtrans-train.pk`, `new-test.pk`), each `{id, subject (Chinese question), choices, choice_nums,
   label (0-3), image (grayscale numpy array), manual_program, numbers, formal_point, token_list, ...}`,
   and the same problems as `GeoQA3/json/<id>.json` + `GeoQA3/image/<id>.png`. Pickles are found as
   `*.pk` or `<folder>/*.pk`; the split comes from the file name (train / dev -> val / test). When
   pickles are present the GeoQA3/json copy is not read (it holds the same problems and no
   split); without pickles it is read with the split "unassigned" (which the subsample excludes:
   it may hold test problems). GeoQA+'s `GeoQA-train.pk` is a subset of `Mix-train.pk`: both are
   read, and the subsample keeps one copy of each problem (same image and question).
   `Backtrans-train.pk` (Mix-train augmented by back-translation, per the GeoQA+ README) is passed
   over with a reported Skip: paraphrased copies of problems already read.
   Pickles are loaded with a restricted unpickler that only rebuilds numpy arrays, numpy scalars
   and builtin containers; a pickle naming anything else (os.system, ...) is refused whole and
   quarantined as `unsafe_file`, nothing in it executed. Each embedded image is rendered to PNG
   once under the data root (the view's `_derived/` mount, never the raw folder, which may be
   read-only), named by the SHA-256 of the pixel array (`_derived/png/<sha>.png`): a changed image
   gets a new file, an unchanged one is not rendered again. All images are rendered before the
   first row is yielded.
2. The English LLaVA-format instruction release (Geo170K, G-LLaVA): `qa_tuning.json` =
   `[{image: "geoqa_plus/<n>.png", conversations: [{from: human, value: "<image>...Question: ...
   Choices:\nA:..\nB:.."}, {from: gpt, value: "... Answer:C"}]}]` with images under `images/`.
   Only rows whose image lies in `geoqa_plus/` are GeoQA+ (Geo170K also carries Geometry3K rows,
   which are not this source and are passed over). The answer letter is read from the end of the
   gpt turn; the conversation is kept as released; split "train". `images/` may stay zipped as
   downloaded (`images.zip`, read in place).
The source folder may be the folder holding these files, the GeoQA+ repository root (`data/`
inside), a Geo170K download, or an inner folder (`GeoQA3/`, `images/`).
"""
from __future__ import annotations

import hashlib
import importlib
import io
import pickle
import posixpath
import re
from typing import Iterator

from pipeline.sources import register
from pipeline.sources.base import (
    Item,
    Reader,
    Sample,
    Reject,
    Skip,
    guarded,
    json_records,
    letter,
    load_json,
    multiple_choice_question,
    single_turn,
    text,
)

LLAVA_FILE = "qa_tuning.json"
LLAVA_IMAGES = "images"
LLAVA_PREFIX = "geoqa_plus/"
GEOQA3_JSON = "GeoQA3/json"
GEOQA3_IMAGES = "GeoQA3/image"
DERIVED = "_derived"
AUXILIARY_PICKLES = {"sub_dataset_dict.pk": "a problem-type lookup shipped beside the data, not problems"}
AUGMENTED_PICKLES = {"Backtrans-train.pk": "Mix-train's problems augmented by back-translation (paraphrased "
                     "copies of problems read from Mix-train.pk)"}
UNASSIGNED = "unassigned"

# ---- restricted unpickling ---------------------------------------------------------------------


class UnsafePickleError(pickle.UnpicklingError):
    """The pickle names a global outside the allowed set; nothing was executed."""


_BUILTINS = {"list", "dict", "set", "frozenset", "tuple", "str", "bytes", "bytearray", "int", "float",
             "complex", "bool", "slice", "range"}
# (module, name) -> (submodule of numpy._core / numpy.core, attribute); both spellings, numpy 1 and 2
_NUMPY = {
    ("numpy.core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"): ("multiarray", "_reconstruct"),
    ("numpy.core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy._core.multiarray", "scalar"): ("multiarray", "scalar"),
    ("numpy.core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"): ("numeric", "_frombuffer"),
}


def _numpy_internal(sub: str, attr: str):
    for module in (f"numpy._core.{sub}", f"numpy.core.{sub}"):
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            continue
    raise UnsafePickleError(f"numpy internal {sub}.{attr} is not available")


class RestrictedUnpickler(pickle.Unpickler):
    """Rebuilds only numpy arrays, numpy scalars and builtin containers."""

    def find_class(self, module: str, name: str):
        if module == "builtins" and name in _BUILTINS:
            return getattr(__import__("builtins"), name)
        if (module, name) in _NUMPY:
            return _numpy_internal(*_NUMPY[(module, name)])
        if module == "numpy" and name in ("ndarray", "dtype"):
            import numpy

            return getattr(numpy, name)
        if module == "numpy.dtypes" and name.endswith("DType"):
            import numpy.dtypes

            cls = getattr(numpy.dtypes, name, None)
            if cls is not None:
                return cls
        if (module, name) == ("_codecs", "encode"):  # bytes in protocol-2 pickles
            import _codecs

            return _codecs.encode
        if (module, name) == ("collections", "OrderedDict"):
            import collections

            return collections.OrderedDict
        raise UnsafePickleError(f"refused to load global {module}.{name}: only numpy arrays and builtin "
                                "containers may be unpickled")

    def persistent_load(self, pid):
        raise UnsafePickleError("refused a persistent id")


def safe_load(fh) -> object:
    return RestrictedUnpickler(fh, encoding="latin1").load()


LOAD_ERRORS = (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError,
               KeyError, UnicodeDecodeError, ImportError, OverflowError, MemoryError, RecursionError)

# ---- field helpers -----------------------------------------------------------------------------


def plain(value):
    """numpy scalars / arrays and tuples -> JSON-able Python values (for meta)."""
    try:
        import numpy
    except ImportError:  # pragma: no cover
        numpy = None
    if numpy is not None:
        if isinstance(value, numpy.ndarray):
            return value.tolist() if value.size <= 64 else f"<array {value.shape}>"
        if isinstance(value, numpy.generic):
            return value.item()
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    return value


def fmt_num(v) -> str:
    v = plain(v)
    if isinstance(v, float) and v.is_integer():
        return str(int(v))
    return str(v)


def option_texts(rec: dict) -> list[str] | None:
    """`choices` (texts) when present, else `choice_nums` (numbers) formatted as text."""
    raw = rec.get("choices")
    if raw is None:
        raw = rec.get("choice_nums")
    raw = plain(raw)
    if not isinstance(raw, list) or not 2 <= len(raw) <= 26:
        return None
    if not all(isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in raw):
        return None
    return [c.strip() if isinstance(c, str) else fmt_num(c) for c in raw]


def label_index(value) -> int | None:
    value = plain(value)
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        s = value.strip()
        if s.isdigit():
            return int(s)
        if len(s) == 1 and s.upper() in "ABCDEFGH":
            return ord(s.upper()) - 65
    return None


def id_text(value) -> str | None:
    value = plain(value)
    if isinstance(value, bool) or not isinstance(value, (int, str)) or text(value) == "":
        return None
    return text(value).replace("/", "_")


def pickle_split(rel: str) -> str:
    stem = posixpath.basename(rel)[: -len(".pk")].lower()
    for word, split in (("train", "train"), ("dev", "val"), ("val", "val"), ("test", "test")):
        if word in stem:
            return split
    return stem


def array_key(array) -> str:
    """SHA-256 of a pixel array's dtype, shape and bytes: the name of its rendered PNG."""
    import numpy

    if not isinstance(array, numpy.ndarray):
        raise TypeError(f"image is a {type(array).__name__}, not a numpy array")
    h = hashlib.sha256(f"{array.dtype.str}|{array.shape}|".encode())
    h.update(numpy.ascontiguousarray(array).tobytes())
    return h.hexdigest()


def render_once(array, derived) -> str:
    """The view path of the PNG of `array` under the derived folder, rendered if not there yet."""
    key = array_key(array)
    rel = f"png/{key}.png"
    if not derived.exists(rel):
        data = render_png(array)
        tmp = f"{rel}.tmp-{key[:8]}"
        with derived.open(tmp, "wb") as out:
            out.write(data)
        derived.replace(tmp, rel)
    return f"{DERIVED}/{rel}"


def render_png(array) -> bytes:
    """A grayscale (or RGB) numpy array as PNG bytes; ValueError when it is not an image."""
    import numpy
    from PIL import Image

    if not isinstance(array, numpy.ndarray):
        raise TypeError(f"image is a {type(array).__name__}, not a numpy array")
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)) or min(array.shape[:2]) < 1:
        raise ValueError(f"image array of shape {array.shape} is not a picture")
    if array.dtype.kind not in "uifb":
        raise ValueError(f"image array of dtype {array.dtype} is not numeric")
    if array.dtype != numpy.uint8:
        if array.dtype.kind == "f" and array.size and float(array.max()) <= 1.0:
            array = array * 255.0
        array = numpy.clip(array, 0, 255).astype(numpy.uint8)
    im = Image.fromarray(numpy.ascontiguousarray(array))
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    return buf.getvalue()


# ---- LLaVA form parsing ------------------------------------------------------------------------

ANSWER_AT_END = re.compile(r"Answer\s*[:：]\s*\(?([A-Z])\)?\s*\.?\s*$")
ANSWER_PHRASES = [
    re.compile(r"the (?:correct )?answer is (?:option )?\(?([A-H])\)?", re.I),
    re.compile(r"option \(?([A-H])\)? is (?:selected|correct)", re.I),
]
FREE_ANSWER_AT_END = re.compile(r"Answer\s*[:：]\s*(.+?)\s*$", re.S)
CHOICE_LINE = re.compile(r"^\s*\(?([A-H])\)?\s*[:：.)]\s*(.*?)\s*$")


def split_prompt(human: str) -> tuple[str, list[str]]:
    """(question stem, option texts) from a Geo170K human turn:
    '<instruction>\\nQuestion: <stem>\\nChoices:\\nA:..\\nB:..'."""
    body = human.replace("<image>", "").strip()
    options: list[str] = []
    m = re.search(r"(?:^|\n)\s*Choices\s*[:：]\s*\n?", body)
    if m:
        expected = 0
        for line in body[m.end():].splitlines():
            cm = CHOICE_LINE.match(line)
            if cm and ord(cm.group(1)) - 65 == expected:
                options.append(cm.group(2))
                expected += 1
            elif options and line.strip():
                options[-1] = f"{options[-1]} {line.strip()}"  # a choice wrapped over two lines
        stem_part = body[: m.start()]
    else:
        stem_part = body
    q = re.search(r"Question\s*[:：]\s*", stem_part)
    stem = stem_part[q.end():] if q else stem_part
    return stem.strip(), options


def answer_letter(gpt: str) -> str | None:
    m = ANSWER_AT_END.search(gpt.strip())
    if m:
        return m.group(1)
    for pattern in ANSWER_PHRASES:
        hits = pattern.findall(gpt)
        if hits:
            return hits[-1].upper()
    return None


# ---- the reader --------------------------------------------------------------------------------


@register
class GeoQAPlusReader(Reader):
    name = "geoqa_plus"
    description = "GeoQA+ geometry multiple choice: Geo170K qa_tuning.json and/or the original pickles"
    required = ((LLAVA_FILE, "*.pk", "*/*.pk", f"{GEOQA3_JSON}/*.json"),)
    wrappers = ("data", "Geo170K", "playground/data")
    inner_names = ("GeoQA3", LLAVA_IMAGES, "json")
    image_hint = "Geo170K images are images/geoqa_plus/<n>.png beside qa_tuning.json (or images.zip)"

    def stores(self, base) -> dict:
        if base.isdir(LLAVA_IMAGES) or not base.isfile("images.zip"):
            return {}
        top = base.zip_root("images.zip")
        inside = LLAVA_IMAGES if any(e.name == LLAVA_IMAGES for e in top.ls()) else ""
        return {LLAVA_IMAGES: base.zip_root("images.zip", inside)}
    skipped_splits: dict[str, str] = {}
    stratify_key = None

    def read(self, root) -> Iterator[Item]:
        # Render every embedded image before the first row of any form is yielded: the central
        # image checker lists the source folder once, when it checks its first row, and must see
        # the rendered files in that listing.
        pickles, skipped = self._pickle_files(root)
        yield from skipped
        prepared = [(rel, self._prepare_pickle(root, rel)) for rel in pickles]
        if root.exists(LLAVA_FILE):
            yield from guarded(self.name, LLAVA_FILE, lambda: self._llava(root))
        for rel, (items, lite) in prepared:
            yield from items
            yield from (self._problem(rec, rel, pickle_split(rel), where) for rec, where in lite)
        if not pickles and root.isdir(GEOQA3_JSON):
            yield from self._geoqa3(root)

    # -- form 2: Geo170K LLaVA instructions ------------------------------------------------------

    def _llava(self, root) -> Iterator[Item]:
        others = 0
        for pos, rec in json_records(self, root, LLAVA_FILE):
            where = f"{LLAVA_FILE}#{pos}"
            nid = f"qa_tuning/{pos}"
            if type(rec) is Reject:
                yield rec
                continue
            if not isinstance(rec, dict):
                yield self.reject(nid, "malformed_record", "record is not an object", where, rec)
                continue
            image = rec.get("image")
            if image is not None and not isinstance(image, str):
                yield self.reject(nid, "malformed_record", "'image' is not a string", where, rec)
                continue
            image = text(image) or None
            if image and not image.startswith(LLAVA_PREFIX):
                others += 1  # a Geometry3K (or other) row of Geo170K: not this source
                continue
            yield self._llava_item(rec, nid, image, where)
        if others:
            yield Skip(LLAVA_FILE, f"{others} records whose image is not under {LLAVA_PREFIX} (Geometry3K and other "
                       "datasets of Geo170K)", rows=others)

    def _llava_item(self, rec: dict, nid: str, image: str | None, where: str) -> Item:
        conv = rec.get("conversations")
        if (not isinstance(conv, list) or len(conv) < 2
                or not all(isinstance(t, dict) and isinstance(t.get("value"), str) for t in conv)
                or conv[0].get("from") != "human" or conv[1].get("from") != "gpt"):
            return self.reject(nid, "malformed_record",
                               "'conversations' must start with a human turn and a gpt turn, each with a text value",
                               where, rec)
        human, gpt = conv[0]["value"], conv[1]["value"]
        question, options = split_prompt(human)
        answer_text = None
        if options:
            answer = answer_letter(gpt)
            if answer is None:
                return self.reject(nid, "malformed_record", "no answer letter at the end of the gpt turn", where, rec)
            if ord(answer) - 65 >= len(options):
                return self.reject(nid, "bad_option_index",
                                   f"answer {answer} is outside the {len(options)} choices", where, rec)
            answer_text = options[ord(answer) - 65]
        else:
            m = FREE_ANSWER_AT_END.search(gpt.strip().splitlines()[-1] if gpt.strip() else "")
            if not m:
                return self.reject(nid, "malformed_record", "no choices and no final 'Answer:' in the gpt turn",
                                   where, rec)
            answer = m.group(1).strip()
        turns = [{"from": t.get("from"), "value": t["value"]} for t in conv]
        first = turns[0]["value"].replace("<image>", "").strip()
        turns[0] = {"from": "human", "value": f"<image>\n{first}" if image else first}
        meta = {"image": image, "form": "geo170k"}
        if answer_text is not None:
            meta["answer_text"] = answer_text
        if rec.get("id") is not None:
            meta["native_record_id"] = plain(rec.get("id"))
        return Sample(
            source=self.name,
            native_id=nid,
            split="train",
            image_path=f"{LLAVA_IMAGES}/{image}" if image else None,
            question=question,
            answer=answer,
            conversations=turns,
            options=options,
            meta=meta,
        )

    # -- form 1: the original pickles ---------------------------------------------------------------

    @staticmethod
    def _pickle_files(root) -> tuple[list[str], list[Skip]]:
        found, skipped = [], []
        for rel in root.glob("*.pk") + root.glob("*/*.pk"):
            parts = rel.split("/")
            if any(p.startswith(("_", ".")) for p in parts):
                continue
            why = AUXILIARY_PICKLES.get(parts[-1]) or AUGMENTED_PICKLES.get(parts[-1])
            if why:
                skipped.append(Skip(rel, why))
                continue
            found.append(rel)
        return sorted(found), skipped

    def _prepare_pickle(self, root, rel: str) -> tuple[list, list]:
        """Load one pickle (restricted), render its images once, and keep each record without its
        pixel array: ([rejects for the file], [(record, location)])."""
        try:
            with root.open(rel, "rb") as fh:
                data = safe_load(fh)
        except UnsafePickleError as exc:
            return [self.reject(None, "unsafe_file", f"pickle refused, nothing executed: {exc}", rel)], []
        except LOAD_ERRORS as exc:
            return [Reject(self.name, None, "unreadable_file", f"{rel}: not a readable pickle: "
                           f"{type(exc).__name__}: {exc}", rel, rows=None)], []
        if not isinstance(data, list):
            rows = len(data) if isinstance(data, (dict, tuple, set)) else None
            return [Reject(self.name, None, "wrong_shape", f"{rel}: expected a list of problem dicts, found a "
                           f"{type(data).__name__}", rel, rows=rows)], []
        lite = []
        derived = getattr(root, "derived", None)
        for pos, rec in enumerate(data):
            where = f"{rel}#{pos}"
            if not isinstance(rec, dict):
                lite.append((rec, where))
                continue
            rec = dict(rec)
            array = rec.pop("image", None)
            ident = id_text(rec.get("id"))
            if array is None or ident is None:
                rec["_image"] = None
            elif derived is None:
                rec["_image_error"] = "no folder for derived files was given (read through the data store)"
            else:
                try:
                    rec["_image"] = render_once(array, derived)
                except (TypeError, ValueError) as exc:
                    rec["_image_error"] = f"{type(exc).__name__}: {exc}"
            lite.append((rec, where))
            data[pos] = None  # let the pixel arrays go as we pass
        return [], lite

    def _problem(self, rec, rel: str, split: str, where: str) -> Item:
        if not isinstance(rec, dict):
            return self.reject(None, "malformed_record", "problem is not a dict", where, plain(rec))
        ident = id_text(rec.get("id"))
        stem = rel[: -len(".pk")]
        nid = f"{stem}/{ident}" if ident is not None else None
        shown = {k: plain(v) for k, v in rec.items() if k not in ("token_list",)}
        if ident is None:
            return self.reject(None, "malformed_record", "problem has no usable 'id'", where, shown)
        if "_image_error" in rec:
            return self.reject(nid, "unreadable_image", f"embedded image cannot be rendered: {rec['_image_error']}",
                               where, shown)
        return self._mc_sample(rec, nid, split, rec.get("_image"), where, shown)

    def _mc_sample(self, rec: dict, nid: str, split: str, image_path: str | None, where: str, shown) -> Item:
        subject = rec.get("subject")
        if subject is not None and not isinstance(subject, str):
            return self.reject(nid, "malformed_record", "'subject' is not a string", where, shown)
        if "subject" not in rec:
            return self.reject(nid, "malformed_record", "'subject' (the question) is missing", where, shown)
        options = option_texts(rec)
        if options is None:
            return self.reject(nid, "malformed_record", "'choices' / 'choice_nums' missing or not a list of 2+ values",
                               where, shown)
        idx = label_index(rec.get("label"))
        if idx is None:
            return self.reject(nid, "malformed_record", f"'label' {plain(rec.get('label'))!r} is not an option index",
                               where, shown)
        if not 0 <= idx < len(options):
            return self.reject(nid, "bad_option_index", f"label {idx} is outside the {len(options)} choices",
                               where, shown)
        question = text(subject)
        answer = letter(idx)
        meta = {"id": plain(rec.get("id")), "answer_text": options[idx], "label": idx, "form": "original"}
        for key in ("manual_program", "numbers", "choice_nums", "formal_point", "type", "comment"):
            if key in rec:
                meta[key] = plain(rec[key])
        return Sample(
            source=self.name,
            native_id=nid,
            split=split,
            image_path=image_path,
            question=question,
            answer=answer,
            conversations=single_turn(multiple_choice_question(question, options), answer),
            options=options,
            meta=meta,
        )

    # -- form 1b: GeoQA3/json + GeoQA3/image ----------------------------------------------------------

    def _geoqa3(self, root) -> Iterator[Item]:
        for rel in root.glob(f"{GEOQA3_JSON}/*.json"):
            yield from guarded(self.name, rel, lambda rel=rel: self._geoqa3_one(root, rel))

    def _geoqa3_one(self, root, rel: str) -> Iterator[Item]:
        rec = load_json(root, rel)
        stem = posixpath.basename(rel)[: -len(".json")]
        if not isinstance(rec, dict):
            yield self.reject(f"GeoQA3/{stem}", "malformed_record", "problem file is not a JSON object", rel, rec)
            return
        ident = id_text(rec.get("id")) or stem
        nid = f"GeoQA3/{ident}"
        yield self._mc_sample(rec, nid, UNASSIGNED, f"{GEOQA3_IMAGES}/{stem}.png", rel, rec)
