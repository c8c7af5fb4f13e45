"""The generation cores over a (model, processor) pair: Mllama (`MllamaForConditionalGeneration` +
`MllamaProcessor`).

`GenerationCore` (what the strategies use), GPU-first:
  - a question is encoded once: one vision-tower pass, its cross-attention keys/values projected
    once into the question's row of the runner's arena (`runner.py`), one prefill of the prompt;
  - the N candidates of a step are one batched decoding loop: candidate 0 continues in the
    question's row, the others in rows that copy its keys/values (a device copy, no recompute);
    candidates of several questions (`sample_many`) share the loop's batch;
  - every step stays on the device (sampling included, `sampling.py`); the only host transfer is
    the step's new token ids (B integers) for stop detection, read one step late on CUDA so the
    device never waits for the host; the cache's shapes are fixed (CUDA graphs on CUDA);
  - stop strings are found per new token (`StopScanner`), never by decoding whole sequences;
  - committing the winner queues its tokens; they are fed in one forward when the next step needs
    them; marks and rollbacks only move the question's length;
  - `score` gives log-probabilities of continuations after judge prompts about the question's
    image (what the judge reads, see `judge.py`): one batched forward over prompts that share their
    encoded prefix (a small per-question prefix cache), the image reused from the question's row.

`NaiveCore` reproduces the public code's cost structure, for the benchmark only: every candidate is
a separate `generate` call that re-processes the image and re-encodes the whole prefix, stop strings
are checked by decoding the whole sequence after every token, judge prompts are scored one by one,
each from scratch. Under greedy decoding both cores choose the same text.

Both count model forward calls, forward tokens (positions computed, pad included), vision encoder
runs, generate calls and judge calls in `core.stats`.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from .base import Candidate, ScoreItem, StopScanner
from .runner import MllamaRunner
from .sampling import Sampling, choose, exponential_noise


@dataclass
class Stats:
    forward_calls: int = 0        # language-model forward passes
    forward_tokens: int = 0       # token positions computed by them (batch x length)
    vision_calls: int = 0         # vision-encoder passes
    generate_calls: int = 0       # candidate-generation calls (batched or not)
    judge_calls: int = 0          # judge calls (one per batch of scored prompts)
    judge_prompts: int = 0        # judge prompts scored

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def reset(self) -> None:
        for k in self.as_dict():
            setattr(self, k, 0)


def resolve_device(device: str | None) -> str:
    """'auto' (or None): cuda when present, else cpu."""
    if device in (None, "", "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def resolve_dtype(dtype: str | torch.dtype | None, device: str) -> torch.dtype | None:
    """'auto' (or None): bfloat16 on CUDA, the checkpoint's own dtype elsewhere (None)."""
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "", "auto"):
        return torch.bfloat16 if str(device).startswith("cuda") else None
    return getattr(torch, dtype)


def load(model_path: str, device: str | None = "auto", dtype: str | torch.dtype | None = "auto"):
    """(model, processor) from a Hugging Face folder or hub id, in eval mode, on `device`."""
    from transformers import AutoProcessor, MllamaForConditionalGeneration

    device = resolve_device(device)
    kwargs: dict[str, Any] = {}
    dt = resolve_dtype(dtype, device)
    if dt is not None:
        kwargs["dtype"] = dt
    model = MllamaForConditionalGeneration.from_pretrained(model_path, **kwargs).to(device).eval()
    processor = AutoProcessor.from_pretrained(model_path)
    return model, processor


def lcp(a: Sequence[int], b: Sequence[int], limit: int) -> int:
    n = 0
    for x, y in zip(a, b):
        if n >= limit or x != y:
            break
        n += 1
    return n


class _Base:
    batched = True

    def __init__(self, model, processor, *, temperature: float = 0.6, top_p: float = 0.9, top_k: int = 0,
                 greedy: bool = False, seed: int = 0, suppress_eos: bool = False, ignore_stops: bool = False,
                 vocab_limit: int | None = None):
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.temperature, self.top_p, self.top_k, self.greedy = temperature, top_p, top_k, greedy
        self.suppress_eos = suppress_eos          # benchmark: keep every candidate to its budget
        self.ignore_stops = ignore_stops          # benchmark (random weights): stop tags never end a candidate
        self.vocab_limit = vocab_limit            # benchmark: sample only ids the (smaller) tokenizer knows
        self.seed = seed
        self.stats = Stats()
        self.device = next(model.parameters()).device
        eos = set()
        for src in (getattr(model.generation_config, "eos_token_id", None), self.tokenizer.eos_token_id):
            if isinstance(src, int):
                eos.add(src)
            elif src:
                eos.update(src)
        self.eos_ids = sorted(eos)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]
        self.image_token_id = model.config.image_token_index
        self._pieces: dict[int, str] = {}

    def sampling(self, greedy: bool | None) -> Sampling:
        return Sampling(self.temperature, self.top_p, self.top_k, self.greedy if greedy is None else greedy)

    def reseed(self, seed: int | None = None) -> None:
        """Restart the sampling random streams (the same seed gives the same candidates)."""
        self.seed = self.seed if seed is None else seed
        torch.manual_seed(self.seed)      # the naive core samples inside `generate`

    def close(self) -> None:
        pass

    # --- text helpers -------------------------------------------------------------------------
    def chat_text(self, text: str, image: bool = True) -> str:
        """The user turn rendered by the model's chat template, ready for the assistant's reply.
        The template already starts with <|begin_of_text|>: whoever tokenises it passes
        add_special_tokens=False (else the prompt starts with it twice)."""
        content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                  add_generation_prompt=True)

    def tokens(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def piece(self, token_id: int) -> str:
        p = self._pieces.get(token_id)
        if p is None:
            p = self.tokenizer.decode([token_id], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            self._pieces[token_id] = p
        return p

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def encode_prompt(self, image, question: str) -> dict:
        """Processor inputs of the question (with its image, or text only), special tokens once."""
        text = self.chat_text(question, image=image is not None)
        if image is None:
            return dict(self.processor(text=text, add_special_tokens=False, return_tensors="pt"))
        return dict(self.processor(images=image, text=text, add_special_tokens=False, return_tensors="pt"))

    def score_ids(self, item: ScoreItem, image: bool) -> tuple[list[int], int]:
        """(token ids of prompt + reply + continuation, where the continuation starts)."""
        ids = self.tokens(self.chat_text(item.prompt, image=image))
        for part in (item.reply,):
            ids += self.tokens(part) if isinstance(part, str) else list(part)
        at = len(ids)
        ids += self.tokens(item.continuation) if isinstance(item.continuation, str) else list(item.continuation)
        return ids, at


# ---------------------------------------------------------------------------------------------
# the efficient core
# ---------------------------------------------------------------------------------------------
class GenerationCore(_Base):
    """Batched, device-resident generation over once-encoded questions (see the module docstring)."""

    batched = True

    def __init__(self, model, processor, *, rows: int = 16, cuda_graphs: bool | None = None,
                 overlap: bool | None = None, **kwargs):
        super().__init__(model, processor, **kwargs)
        self.runner = MllamaRunner(model, rows=rows, cuda_graphs=cuda_graphs, stats=self.stats)
        # read a step's tokens one step late (CUDA): the next forward is queued before the host waits
        self.overlap = self.device.type == "cuda" if overlap is None else overlap
        # a small model on the CPU runs on one thread: its matrices are too small to share, and on a
        # busy machine more threads spin against each other (measured: 43x slower at load 12 on 2 cores)
        small = sum(p.numel() for p in model.parameters()) < 50_000_000
        self.cpu_threads = 1 if self.device.type == "cpu" and small else None
        self._index: dict[tuple[int, ...], torch.Tensor] = {}
        # on the device once: indexing a CUDA tensor with a Python list uploads it and waits for the device
        self._eos_index = torch.tensor(self.eos_ids, dtype=torch.long, device=self.device)

    @contextlib.contextmanager
    def threads(self):
        if self.cpu_threads is None:
            yield
            return
        before = torch.get_num_threads()
        torch.set_num_threads(self.cpu_threads)
        try:
            yield
        finally:
            torch.set_num_threads(before)

    def open(self, image, question: str, seed: int | None = None) -> "EfficientSession":
        return EfficientSession(self, image, question, self.seed if seed is None else seed)

    # --- prefill --------------------------------------------------------------------------
    def sync_many(self, sessions: Sequence["EfficientSession"]) -> None:
        """Every session's row holds its prompt and every committed token: new questions get their
        image encoded and their prompt prefilled, pending winners are fed; one batched forward."""
        todo = []
        for s in sessions:
            if s.home is None:
                s.start()
            if s.pending:
                todo.append(s)
        if not todo:
            return
        width = max(len(s.pending) for s in todo)
        ids = torch.full((len(todo), width), self.pad_id, dtype=torch.long)
        for i, s in enumerate(todo):
            ids[i, : len(s.pending)] = torch.tensor(s.pending)
        logits = self.runner.forward(ids, [s.home for s in todo], [s.length for s in todo],
                                     last=[len(s.pending) - 1 for s in todo])
        for i, s in enumerate(todo):
            s.logits = logits[i : i + 1]
            s.length += len(s.pending)
            s.pending = []

    # --- candidates -----------------------------------------------------------------------
    def sample_many(self, requests: Sequence[tuple["EfficientSession", int, Sequence[str], int, bool | None]]
                    ) -> list[list[Candidate]]:
        """For each (session, n, stop strings, max new tokens, greedy): n continuations of the
        session's committed text, all requests decoded in one loop."""
        with self.threads():
            return self._sample_many(requests)

    def _sample_many(self, requests) -> list[list[Candidate]]:
        sessions = [r[0] for r in requests]
        self.sync_many(sessions)
        runner = self.runner
        # finished rows ride along (fixed batch) until the longest budget is spent: room for the
        # longest prompt plus the longest budget, whichever requests they belong to
        runner.ensure(runner.R, max(s.length for s in sessions) + max(r[3] for r in requests) + 1)
        plan = []       # per request: its rows (home first), sampling, scanner, budget
        for s, n, stop, budget, greedy in requests:
            extra = runner.alloc(n - 1)
            runner.copy_rows(s.home, extra, s.length)
            scan = StopScanner([] if self.ignore_stops else stop, self.piece, [] if self.suppress_eos else self.eos_ids)
            plan.append(([s.home] + extra, self.sampling(greedy), scan, budget, s))
            self.stats.generate_calls += 1
        order = sorted((row, j, c) for j, p in enumerate(plan) for c, row in enumerate(p[0]))
        rows = [o[0] for o in order]
        toks = [[[] for _ in p[0]] for p in plan]
        ends = [["budget"] * len(p[0]) for p in plan]
        live = {(j, c) for _, j, c in order}
        positions = torch.tensor([plan[j][4].length for _, j, _ in order], device=self.device)
        logits = torch.cat([plan[j][4].logits for _, j, _ in order])
        window = max(p[4].length + p[3] for p in plan) + 1
        keep_rows = self.overlap or runner.cuda_graphs          # fixed batch: finished rows ride along
        cuda = self.device.type == "cuda"
        # the step's one host transfer: its token ids and their log-probabilities, packed together
        host = torch.empty((2, len(order)), dtype=torch.float64, pin_memory=cuda) if self.overlap else None
        lps = [[0.0] * len(p[0]) for p in plan]
        for step in range(max(p[3] for p in plan)):
            tokens = self._choose(logits, order, plan)
            chosen = torch.log_softmax(logits.float(), dim=-1).gather(-1, tokens[:, None])[:, 0]
            packed = torch.stack([tokens.double(), chosen.double()])
            if self.overlap:
                host.copy_(packed, non_blocking=cuda)
                ready = torch.cuda.Event() if cuda else None
                if ready is not None:
                    ready.record()
                if step + 1 < max(p[3] for p in plan):   # queue the next forward before waiting for this step's ids
                    logits = runner.decode(tokens, rows, positions, window)
                    positions = positions + 1
                if ready is not None:
                    ready.synchronize()
                got, got_lp = host.tolist()
            else:
                got, got_lp = packed.tolist()
            for (row, j, c), t, lp in zip(order, got, got_lp):
                t = int(t)
                if (j, c) not in live:
                    continue
                hit = plan[j][2].feed(c, t)
                if hit != "eos":
                    toks[j][c].append(t)
                    lps[j][c] += lp
                if hit is not None or len(toks[j][c]) >= plan[j][3]:
                    ends[j][c] = hit or "budget"
                    live.discard((j, c))
            if not live:
                break
            if self.overlap:
                continue
            if not keep_rows:
                kept = [i for i, (_, j, c) in enumerate(order) if (j, c) in live]
                if len(kept) < len(order):
                    sel = torch.tensor(kept, device=self.device)
                    order = [order[i] for i in kept]
                    rows = [rows[i] for i in kept]
                    tokens, positions = tokens.index_select(0, sel), positions.index_select(0, sel)
            logits = runner.decode(tokens, rows, positions, window)
            positions = positions + 1
        for p in plan:
            runner.release(p[0][1:])
        return [[Candidate(self.decode(t), t, e, lp) for t, e, lp in zip(toks[j], ends[j], lps[j])]
                for j in range(len(plan))]

    def _choose(self, logits: torch.Tensor, order, plan) -> torch.Tensor:
        if self.suppress_eos or self.vocab_limit:
            logits = logits.clone()
            if self.suppress_eos:
                logits.index_fill_(1, self._eos_index, float("-inf"))
            if self.vocab_limit:
                logits[:, self.vocab_limit:] = float("-inf")
        # each request draws noise for all its candidates every step, from its session's generator:
        # which rows are still running, and which other questions share the batch, never change the
        # random stream of a question
        vocab = logits.shape[-1]
        noise = {j: exponential_noise((len(p[0]), vocab), p[4].generator, self.device)
                 for j, p in enumerate(plan) if not p[1].greedy}
        out = []
        i = 0
        while i < len(order):           # each run of one request's rows: its settings
            j = order[i][1]
            k = i
            while k < len(order) and order[k][1] == j:
                k += 1
            s = plan[j][1]
            block = logits[i:k]
            picked = None
            if j in noise:
                cands = tuple(order[x][2] for x in range(i, k))
                index = self._index.get(cands)
                if index is None:        # made once per set of rows, not every step (no upload per token)
                    index = self._index[cands] = torch.tensor(cands, device=self.device)
                picked = noise[j].index_select(0, index)
            out.append(choose(block, s, picked))
            i = k
        return torch.cat(out)

    # --- judge scores ---------------------------------------------------------------------
    def score(self, session: "EfficientSession", items: Sequence[ScoreItem]) -> list[float]:
        """Sum of log-probabilities of each item's continuation after its prompt (a user turn about
        the session's image) and forced reply: one batched forward over a shared, cached prefix."""
        if not items:
            return []
        with self.threads():
            return self._score(session, items)

    def _score(self, session: "EfficientSession", items: Sequence[ScoreItem]) -> list[float]:
        self.sync_many([session])
        self.stats.judge_calls += 1
        self.stats.judge_prompts += len(items)
        runner = self.runner
        has_image = session.image is not None
        seqs = [self.score_ids(it, has_image) for it in items]
        cap = min(at for _, at in seqs) - 1          # the first target's column must be computed
        base_row, base_k = session.judge_prefix([ids for ids, _ in seqs], cap)
        rows = runner.alloc(len(seqs), top=True)
        try:
            runner.copy_rows(base_row, rows, base_k)
            self._set_image_at(rows, [ids for ids, _ in seqs], has_image)
            width = max(len(ids) - base_k for ids, _ in seqs)
            batch = torch.full((len(seqs), width), self.pad_id, dtype=torch.long)
            targets = []
            for i, (ids, at) in enumerate(seqs):
                batch[i, : len(ids) - base_k] = torch.tensor(ids[base_k:])
                targets.append([(x - 1 - base_k, ids[x]) for x in range(at, len(ids))])
            return runner.token_logprobs(batch, rows, [base_k] * len(seqs), targets)
        finally:
            runner.release(rows)

    def _set_image_at(self, rows: Sequence[int], seqs: Sequence[Sequence[int]], has_image: bool) -> None:
        if not has_image:
            return
        at = [list(ids).index(self.image_token_id) for ids in seqs]
        self.runner.image_at[torch.tensor(list(rows), device=self.device)] = torch.tensor(at, device=self.device)

    def prefill_prefix(self, session: "EfficientSession", ids: Sequence[int], base_row: int, base_k: int) -> int:
        """A new scratch row holding `ids` encoded (from `base_row`'s first `base_k` positions)."""
        row = self.runner.alloc(1, top=True)[0]
        self.runner.copy_rows(base_row, [row], base_k)
        self._set_image_at([row], [ids], session.image is not None)
        self.runner.forward(torch.tensor([list(ids[base_k:])]), [row], [base_k])
        return row


class EfficientSession:
    """One question on the efficient core: its row in the arena (prompt + committed answer)."""

    PREFIXES = 2          # judge-prompt prefixes kept per question (scratch rows)

    def __init__(self, core: GenerationCore, image, question: str, seed: int):
        self.core, self.image, self.question = core, image, question
        self.generator = torch.Generator(device=core.device).manual_seed(seed)
        self.ids: list[int] = []          # committed answer tokens
        self.pending: list[int] = []      # tokens not yet in the row (prompt, then committed winners)
        self._text = ""
        self.home: int | None = None
        self.logits: torch.Tensor | None = None   # next-token logits after the row's contents, (1, V)
        self.length = 0                   # positions in the row
        self._marks: list[tuple[int, str, list[int], torch.Tensor | None, int]] = []
        self.prefixes: list[tuple[tuple[int, ...], int]] = []     # (judge prompt prefix ids, scratch row)

    @property
    def text(self) -> str:
        return self._text

    def start(self) -> None:
        """Claim a row, encode the image into it, queue the prompt (fed by the core's next prefill)."""
        core = self.core
        inputs = core.encode_prompt(self.image, self.question)
        ids = inputs["input_ids"][0].tolist()
        self.home = core.runner.alloc(1)[0]
        image_at = ids.index(core.image_token_id) if self.image is not None else None
        core.runner.set_image(self.home, inputs if self.image is not None else None, image_at)
        self.length = 0
        self.pending = ids + list(self.ids)

    def ensure_prefix(self) -> None:
        self.core.sync_many([self])

    def sample(self, n: int, stop: Sequence[str], max_new_tokens: int, greedy: bool | None = None) -> list[Candidate]:
        return self.core.sample_many([(self, n, stop, max_new_tokens, greedy)])[0]

    def commit(self, candidate: Candidate) -> None:
        self.ids += list(candidate.token_ids)
        self.pending += list(candidate.token_ids)
        self._text = self.core.decode(self.ids)

    def mark(self) -> int:
        self.core.sync_many([self])
        self._marks.append((len(self.ids), self._text, list(self.pending), self.logits, self.length))
        return len(self._marks) - 1

    def rollback(self, mark: int) -> None:
        n_ids, text, pending, logits, length = self._marks[mark]
        del self._marks[mark + 1:]
        self.ids, self.pending, self._text, self.logits, self.length = self.ids[:n_ids], list(pending), text, logits, length

    def judge_prefix(self, seqs: Sequence[Sequence[int]], cap: int) -> tuple[int, int]:
        """(row, k): a row whose first k positions hold the first k tokens of every sequence. From a
        kept prefix when one matches; when the sequences share at least 8 more tokens among
        themselves, those are encoded once on top and kept (the question, the answer so far and the
        stage's instructions are then encoded once for all the judge calls of a step)."""
        core = self.core
        j, base = 0, self.home
        for key, row in self.prefixes:
            n = min(lcp(key, s, cap) for s in seqs)
            if n > j:
                j, base = n, row
        k = cap
        for s in seqs[1:]:
            k = lcp(seqs[0], s, k)
        k = min(k, len(seqs[0]))
        if k - j < 8:
            return base, j
        row = core.prefill_prefix(self, seqs[0][:k], base, j)
        self.prefixes.append((tuple(seqs[0][:k]), row))
        if len(self.prefixes) > self.PREFIXES:
            _, old = self.prefixes.pop(0)
            core.runner.release([old])
        return row, k

    def close(self) -> None:
        rows = [r for _, r in self.prefixes] + ([self.home] if self.home is not None else [])
        self.core.runner.release(rows)
        self.prefixes, self.home = [], None


# ---------------------------------------------------------------------------------------------
# the naive core (benchmark only)
# ---------------------------------------------------------------------------------------------
class _WholeDecodeStop:
    """The public code's stop test: decode the whole sequence after every token, look for a stop
    string (here: in the part generated by this call, whose offset in the decoded text is known)."""

    def __init__(self, core: "NaiveCore", stop: Sequence[str], prompt_chars: int):
        self.core, self.stop, self.prompt_chars = core, list(stop), prompt_chars
        self.hit: str | None = None

    def __call__(self, input_ids, scores, **kwargs):
        text = self.core.decode(input_ids[0].tolist())
        new = text[self.prompt_chars:]
        for s in self.stop:
            if s in new:
                self.hit = s
                return torch.ones(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        return torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)


class NaiveCore(_Base):
    """One `generate` call per candidate and one forward per judge prompt, each from scratch."""

    batched = False

    def __init__(self, model, processor, **kwargs):
        kwargs.pop("rows", None), kwargs.pop("cuda_graphs", None), kwargs.pop("overlap", None)
        super().__init__(model, processor, **kwargs)
        torch.manual_seed(self.seed)
        self._active = False
        inner = getattr(model, "model", model)
        lm = getattr(inner, "language_model", None) or model.language_model
        vision = getattr(inner, "vision_model", None) or model.vision_model
        self._hooks = [lm.register_forward_pre_hook(self._count_forward, with_kwargs=True),
                       vision.register_forward_pre_hook(self._count_vision)]

    def _count_forward(self, module, args, kwargs):
        if self._active:
            x = kwargs.get("input_ids")
            if x is None:
                x = args[0] if args else kwargs.get("inputs_embeds")
            self.stats.forward_calls += 1
            self.stats.forward_tokens += int(x.shape[0] * x.shape[1])

    def _count_vision(self, module, args):
        if self._active:
            self.stats.vision_calls += 1

    @contextlib.contextmanager
    def counting(self):
        outer = self._active
        self._active = True
        try:
            with torch.inference_mode():
                yield
        finally:
            self._active = outer

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    def open(self, image, question: str, seed: int | None = None) -> "NaiveSession":
        return NaiveSession(self, image, question)

    def _inputs(self, image, text: str, extra: Sequence[int] = ()):
        """The processor run again on the image and the prompt; the answer so far appended as ids."""
        if image is None:
            inputs = dict(self.processor(text=text, add_special_tokens=False, return_tensors="pt"))
        else:
            inputs = dict(self.processor(images=image, text=text, add_special_tokens=False, return_tensors="pt"))
        if extra:
            add = torch.tensor([list(extra)], dtype=torch.long)
            inputs["input_ids"] = torch.cat([inputs["input_ids"], add], dim=1)
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            if "cross_attention_mask" in inputs:
                xm = inputs["cross_attention_mask"]
                inputs["cross_attention_mask"] = torch.cat([xm, xm[:, -1:].expand(-1, len(extra), -1, -1)], dim=1)
        return {k: v.to(self.device) for k, v in inputs.items()}

    def _generate(self, inputs, max_new_tokens: int, greedy: bool, stopping=None):
        from transformers import StoppingCriteriaList

        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=not greedy,
                                      eos_token_id=self.eos_ids, pad_token_id=self.pad_id)
        if not greedy:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=self.top_k or 0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        suppress = list(self.eos_ids) if self.suppress_eos else []
        if self.vocab_limit:
            suppress += list(range(self.vocab_limit, self.model.config.get_text_config().vocab_size))
        if suppress:
            kwargs["suppress_tokens"] = suppress
        if stopping is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([stopping])
        self.stats.generate_calls += 1
        return self.model.generate(**inputs, **kwargs)

    def score(self, session: "NaiveSession", items: Sequence[ScoreItem]) -> list[float]:
        """One forward per judge prompt, from scratch (image re-encoded): the choices of one prompt
        that are a single token each ("1"/"2") are read from that prompt's one forward, as a
        generated verdict would be."""
        out = []
        last: dict[tuple[int, ...], torch.Tensor] = {}     # prompt ids -> log-probs of its next token
        with self.counting():
            for item in items:
                ids, at = self.score_ids(item, session.image is not None)
                if len(ids) - at == 1 and tuple(ids[:at]) in last:
                    out.append(float(last[tuple(ids[:at])][ids[at]]))
                    continue
                self.stats.judge_calls += 1
                self.stats.judge_prompts += 1
                inputs = self._inputs(session.image, self.chat_text(item.prompt, session.image is not None),
                                      ids[len(self.tokens(self.chat_text(item.prompt, session.image is not None))):])
                logits = self.model(**inputs).logits[0].float()
                lp = torch.log_softmax(logits[at - 1 : len(ids) - 1], dim=-1)
                last[tuple(ids[:at])] = lp[0]
                out.append(float(lp.gather(-1, torch.tensor(ids[at:], device=lp.device)[:, None]).sum()))
        return out


class NaiveSession:
    def __init__(self, core: NaiveCore, image, question: str):
        self.core, self.image, self.question = core, image, question
        self.prompt_text = core.chat_text(question, image=image is not None)
        self.ids: list[int] = []
        self._text = ""
        self._marks: list[int] = []

    @property
    def text(self) -> str:
        return self._text

    def sample(self, n: int, stop: Sequence[str], max_new_tokens: int,
               greedy: bool | None = None) -> list[Candidate]:
        core = self.core
        greedy = core.greedy if greedy is None else greedy
        stop = [] if core.ignore_stops else stop
        out = []
        with core.counting():
            for _ in range(n):
                inputs = core._inputs(self.image, self.prompt_text, self.ids)
                start = inputs["input_ids"].shape[1]
                crit = _WholeDecodeStop(core, stop, len(core.decode(inputs["input_ids"][0].tolist())))
                seq = core._generate(inputs, max_new_tokens, greedy, stopping=crit)
                new = seq[0, start:].tolist()
                end = "budget"
                if new and new[-1] in core.eos_ids and not core.suppress_eos:
                    new, end = new[:-1], "eos"
                if crit.hit is not None:
                    end = crit.hit
                out.append(Candidate(core.decode(new), new, end))
        return out

    def commit(self, candidate: Candidate) -> None:
        self.ids += list(candidate.token_ids)
        self._text = self.core.decode(self.ids)

    def mark(self) -> int:
        self._marks.append(len(self.ids))
        return len(self._marks) - 1

    def rollback(self, mark: int) -> None:
        n = self._marks[mark]
        del self._marks[mark + 1:]
        self.ids = self.ids[:n]
        self._text = self.core.decode(self.ids)

    def close(self) -> None:
        pass


def make_core(model, processor=None, mode: str = "efficient", **kwargs):
    """A core from a model path (loaded here) or from a loaded (model, processor)."""
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        model, processor = load(str(model), device=kwargs.pop("device", "auto"), dtype=kwargs.pop("dtype", "auto"))
    else:
        kwargs.pop("device", None), kwargs.pop("dtype", None)
    cls = {"efficient": GenerationCore, "naive": NaiveCore}[mode]
    return cls(model, processor, **kwargs)
