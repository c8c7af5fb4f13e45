"""ScienceQA (lupantech/ScienceQA: `data/scienceqa/` + the image zips from tools/download.sh).

Native layout (the dataset folder is `data/scienceqa/` of the repository; the source folder may be
the repository root, `data/`, or that folder itself; tools/download.sh fetches `images/train.zip`,
`val.zip`, `test.zip` into `images/` and unzips them there, and a zip left unextracted is read in
place):
  problems.json    {"<pid>": {question, choices (2-5), answer (0-based), hint, image ("image.png" or
                    null), task, grade, subject, topic, category, skill, lecture, solution, split}}
  pid_splits.json  {"train": [pid, ...], "val": [...], "test": [...], "minitrain": [...], ...}
  images/{split}/{pid}/image.png

One sample per problem, multiple choice; the answer is the option letter. Problems whose `image` is
null are text-only: they are yielded with no image and quarantined centrally as `no_image`. All
three splits are kept under their own names (the answers of test are public; the subsample step
excludes the test split by default).

The hint is the problem's context (a passage, a figure caption, the organism's name): the question
is often unanswerable without it, so it is shown in the human turn as "Context: ..." (as ScienceQA's
own prompts and LLaVA's conversion present it) and is also the first hint. The lecture (general
background) is the second hint. The solution (the worked reasoning towards the answer) stays in
`meta` only: it is not given to the teacher, whose reasoning should come from the image.
"""
from __future__ import annotations

from typing import Iterator

from pipeline.sources import register
from pipeline.sources.base import (
    Item,
    Reader,
    Sample,
    Reject,
    guarded,
    json_records,
    letter,
    load_json,
    multiple_choice_question,
    single_turn,
    text,
)
from pipeline.storage import Root

PROBLEMS = "problems.json"
PID_SPLITS = "pid_splits.json"
IMAGES_DIR = "images"
SPLITS = ("train", "val", "test")
META_FIELDS = ("task", "grade", "subject", "topic", "category", "skill", "lecture", "solution")


def prompt_text(question: str, hint: str) -> str:
    """The question as the human asks it: the context (hint) follows the question when present."""
    return f"{question}\nContext: {hint}" if hint else question


@register
class ScienceQAReader(Reader):
    name = "scienceqa"
    description = "ScienceQA: school science multiple-choice problems with hints, lectures and solutions"
    required = ((PROBLEMS,), (IMAGES_DIR,))
    wrappers = ("data/scienceqa", "scienceqa")
    inner_names = (IMAGES_DIR,)
    image_hint = "ScienceQA images are images/<split>/<pid>/image.png (the unzipped images/<split>.zip, or the zip)"

    def stores(self, base: Root) -> dict[str, Root]:
        found = {}
        for split in SPLITS:
            zipped = f"{IMAGES_DIR}/{split}.zip"
            if not base.isdir(f"{IMAGES_DIR}/{split}") and base.isfile(zipped):
                top = base.zip_root(zipped)
                inside = split if any(e.name == split and e.kind == "directory" for e in top.ls()) else ""
                found[f"{IMAGES_DIR}/{split}"] = base.zip_root(zipped, inside)
        return found
    skipped_splits: dict[str, str] = {}  # train, val and test all kept (answers are public)
    stratify_key = "subject"

    def read(self, root: Root) -> Iterator[Item]:
        split_of: dict[str, str] = {}
        if root.exists(PID_SPLITS):
            yield from guarded(self.name, PID_SPLITS, lambda: self._pid_splits(root, split_of))
        yield from guarded(self.name, PROBLEMS, lambda: self._read_problems(root, split_of))

    def _pid_splits(self, root: Root, out: dict[str, str]) -> Iterator[Item]:
        """pid -> split from pid_splits.json (optional: the problems carry their own split).
        A small file (about 21k ids): loaded whole. A part of it with the wrong shape is reported
        (the problems still carry their own split)."""
        data = load_json(root, PID_SPLITS)
        if not isinstance(data, dict):
            yield Reject(self.name, None, "wrong_shape", f"{PID_SPLITS}: expected an object of split -> pid list, "
                         f"found a {type(data).__name__}", PID_SPLITS, rows=0)
            return
        for split in SPLITS:
            pids = data.get(split)
            if pids is None:
                continue
            if not isinstance(pids, list):
                yield Reject(self.name, None, "wrong_shape", f"{PID_SPLITS}: {split!r} is a {type(pids).__name__}, "
                             "not a list of pids", f"{PID_SPLITS}[{split}]", pids, rows=0)
                continue
            for pid in pids:
                if isinstance(pid, (str, int)) and not isinstance(pid, bool):
                    out[str(pid)] = split

    def _read_problems(self, root: Root, split_of: dict[str, str]) -> Iterator[Item]:
        for index, (pid, rec) in enumerate(json_records(self, root, PROBLEMS, kind="object")):
            where = f"{PROBLEMS}#{index}"
            if type(rec) is Reject:
                yield rec
                continue
            problem = self._check(rec) or ("the pid is not a plain name" if "/" in pid or pid in (".", "..") else None)
            if problem:
                yield self.reject(pid, "malformed_record", problem, where, rec)
                continue
            choices = [text(c) for c in rec["choices"]]
            answer_index: int = rec["answer"]
            if not 0 <= answer_index < len(choices):
                yield self.reject(pid, "bad_option_index",
                                  f"answer {answer_index} is outside the {len(choices)} choices", where, rec)
                continue
            split = text(rec.get("split")) or split_of.get(pid)
            if not split or "/" in split:
                yield self.reject(pid, "malformed_record",
                                  "no usable 'split' in the record and the pid is not in pid_splits.json", where, rec)
                continue
            image = text(rec.get("image"))
            image_path = f"{IMAGES_DIR}/{split}/{pid}/{image}" if image else None
            question = text(rec["question"])
            hint = text(rec.get("hint"))
            lecture = text(rec.get("lecture"))
            answer = letter(answer_index)
            meta = {k: (rec.get(k) if isinstance(rec.get(k), str) else None) for k in META_FIELDS}
            meta.update({"hint": hint, "answer_text": choices[answer_index], "image": image or None})
            yield Sample(
                source=self.name,
                native_id=pid,
                split=split,
                image_path=image_path,
                question=question,
                answer=answer,
                conversations=single_turn(multiple_choice_question(prompt_text(question, hint), choices), answer),
                options=choices,
                hints=[h for h in (hint, lecture) if h],
                meta=meta,
            )

    @staticmethod
    def _check(rec) -> str | None:
        if not isinstance(rec, dict):
            return "problem is not an object"
        if not isinstance(rec.get("question"), str):
            return "'question' is missing or not a string"
        choices = rec.get("choices")
        if not isinstance(choices, list):
            return "'choices' is missing or not a list"
        if not 2 <= len(choices) <= 26:
            return f"'choices' has {len(choices)} entries (expected 2 or more)"
        if not all(isinstance(c, (str, int, float)) and not isinstance(c, bool) for c in choices):
            return "'choices' holds a value that is not text"
        answer = rec.get("answer")
        if not isinstance(answer, int) or isinstance(answer, bool):
            return "'answer' is missing or not an integer"
        image = rec.get("image")
        if image is not None and not isinstance(image, str):
            return "'image' is neither null nor a file name"
        if isinstance(image, str) and ("/" in image or "\\" in image or image.strip() in (".", "..")):
            return "'image' is not a plain file name"
        for key in ("hint", "lecture", "solution", "split"):
            if rec.get(key) is not None and not isinstance(rec.get(key), str):
                return f"'{key}' is not a string"
        return None
