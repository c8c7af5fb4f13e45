"""The generation core over a (model, processor) pair: Mllama (`MllamaForConditionalGeneration` +
`MllamaProcessor`), or anything that takes the same inputs.

`GenerationCore` (what the strategies use):
  - a question is encoded once: the image goes through the vision tower in the first (prefill)
    forward, whose cache holds the image's cross-attention keys/values and the prompt's
    self-attention keys/values; every later step reuses that cache;
  - the N candidates of a step are one batched decoding loop over the shared prefix: the cache is
    expanded to N rows (views, no recomputation), each row stops on its own at its stop string,
    end of text or its budget, and finished rows leave the batch;
  - stop strings are found per new token: each row keeps the text of its new tokens (from a cache of
    per-token pieces) and only the tail that the new piece can complete is searched;
  - committing the winner feeds only the winner's tokens onto the single-row prefix cache (one
    forward), so the next step starts from a cache of prompt + answer so far; marks and rollbacks
    crop that cache (retracing);
  - judge prompts of one round are one left-padded batch that reuses the question's image
    keys/values; verdicts are greedy and capped (4 tokens by default); when a verdict names no choice
    the choice whose first token the model preferred at the first step is taken.

`NaiveCore` reproduces the public code's cost structure, for the benchmark only: every candidate is
a separate `generate` call that re-processes the image and re-encodes the whole prefix, stop strings
are checked by decoding the whole sequence after every token, judge calls run one by one. Under
greedy decoding both cores choose the same text.

Both count model forward calls, forward tokens (positions computed, pad included), vision encoder
runs, generate calls and judge calls in `core.stats`.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch

from .base import Candidate, StopScanner, Verdict


@dataclass
class Stats:
    forward_calls: int = 0        # language-model forward passes
    forward_tokens: int = 0       # token positions computed by them (batch x length)
    vision_calls: int = 0         # vision-encoder passes
    generate_calls: int = 0       # candidate-generation calls (batched or not)
    judge_calls: int = 0          # judge calls (one per batch of prompts)
    judge_prompts: int = 0        # judge prompts answered

    def as_dict(self) -> dict[str, int]:
        return asdict(self)

    def reset(self) -> None:
        for k in self.as_dict():
            setattr(self, k, 0)


def load(model_path: str, device: str = "cpu", dtype: str | torch.dtype | None = None):
    """(model, processor) from a Hugging Face folder or hub id, in eval mode."""
    from transformers import AutoProcessor, MllamaForConditionalGeneration

    kwargs: dict[str, Any] = {}
    if dtype is not None:
        kwargs["dtype"] = getattr(torch, dtype) if isinstance(dtype, str) else dtype
    model = MllamaForConditionalGeneration.from_pretrained(model_path, **kwargs).to(device).eval()
    processor = AutoProcessor.from_pretrained(model_path)
    return model, processor


def per_prompt(choices, n: int) -> list[tuple[str, ...]]:
    """`choices` for every prompt: one tuple of strings shared by all, or one tuple per prompt."""
    if choices and isinstance(choices[0], str):
        return [tuple(choices)] * n
    assert len(choices) == n, "one tuple of choices per prompt"
    return [tuple(c) for c in choices]


def _first_choice(text: str, choices: Sequence[str]) -> int | None:
    """The choice written earliest in `text` (on a tie, the longer one: 'incorrect' over 'correct')."""
    best: tuple[int, int] | None = None
    for i, c in enumerate(choices):
        p = text.lower().find(c.lower())
        if p >= 0 and (best is None or (p, -len(c)) < (best[0], -len(choices[best[1]]))):
            best = (p, i)
    return None if best is None else best[1]


class _Base:
    batched = True

    def __init__(self, model, processor, *, temperature: float = 0.6, top_p: float = 0.9,
                 greedy: bool = False, seed: int = 0, suppress_eos: bool = False):
        self.model = model
        self.processor = processor
        self.tokenizer = getattr(processor, "tokenizer", processor)
        self.temperature, self.top_p, self.greedy = temperature, top_p, greedy
        self.suppress_eos = suppress_eos          # benchmark: keep every candidate to its budget
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
        text_cfg = model.config.get_text_config()
        self.cross_layers = set(getattr(text_cfg, "cross_attention_layers", []) or [])
        self._pieces: dict[int, str] = {}
        self._choice_first: dict[tuple[str, ...], list[int]] = {}
        self._active = False
        inner = getattr(model, "model", model)
        self._hooks = [
            inner.language_model.register_forward_pre_hook(self._count_forward, with_kwargs=True),
            inner.vision_model.register_forward_pre_hook(self._count_vision),
        ]

    # --- accounting -------------------------------------------------------------------------
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

    def reseed(self, seed: int | None = None) -> None:
        """Restart the sampling random stream (the same seed gives the same candidates)."""
        self.seed = self.seed if seed is None else seed
        if hasattr(self, "generator"):
            self.generator.manual_seed(self.seed)
        else:
            torch.manual_seed(self.seed)      # the naive core samples inside `generate`

    def close(self) -> None:
        for h in self._hooks:
            h.remove()
        self._hooks = []

    # --- text helpers -------------------------------------------------------------------------
    def chat_text(self, text: str, image: bool = True) -> str:
        content = ([{"type": "image"}] if image else []) + [{"type": "text", "text": text}]
        return self.processor.apply_chat_template([{"role": "user", "content": content}],
                                                  add_generation_prompt=True)

    def piece(self, token_id: int) -> str:
        p = self._pieces.get(token_id)
        if p is None:
            p = self.tokenizer.decode([token_id], skip_special_tokens=True, clean_up_tokenization_spaces=False)
            self._pieces[token_id] = p
        return p

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True, clean_up_tokenization_spaces=False)

    def choice_first_tokens(self, choices: Sequence[str]) -> list[int]:
        key = tuple(choices)
        if key not in self._choice_first:
            self._choice_first[key] = [self.tokenizer.encode(c, add_special_tokens=False)[0] for c in choices]
        return self._choice_first[key]

    def _verdict(self, text: str, first_logits: torch.Tensor, choices: Sequence[str]) -> Verdict:
        c = _first_choice(text, choices)
        if c is not None:
            return Verdict(c, text, True)
        firsts = self.choice_first_tokens(choices)
        scores = first_logits[firsts]
        return Verdict(int(torch.argmax(scores)), text, False)

    def _encode_prompt(self, image, question: str):
        text = self.chat_text(question)
        inputs = self.processor(images=image, text=text, return_tensors="pt")
        return {k: v.to(self.device) for k, v in inputs.items()}


# ---------------------------------------------------------------------------------------------
# the efficient core
# ---------------------------------------------------------------------------------------------
class GenerationCore(_Base):
    """Batched generation over a shared, once-encoded prefix (see the module docstring)."""

    batched = True

    def __init__(self, model, processor, **kwargs):
        super().__init__(model, processor, **kwargs)
        self.generator = torch.Generator(device="cpu").manual_seed(self.seed)

    def open(self, image, question: str) -> "EfficientSession":
        return EfficientSession(self, image, question)

    # sampling: temperature + nucleus (top-p), or greedy
    def choose(self, logits: torch.Tensor, greedy: bool) -> torch.Tensor:
        if self.suppress_eos:
            logits = logits.clone()
            logits[:, self.eos_ids] = float("-inf")
        if greedy:
            return torch.argmax(logits, dim=-1)
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)
        # the nucleus nearly always lies in the top 64: sort only those unless they fall short
        sp, si = torch.topk(probs, min(64, probs.shape[-1]), dim=-1)
        if bool((sp.sum(-1) < self.top_p).any()):
            sp, si = torch.sort(probs, dim=-1, descending=True)
        keep = (sp.cumsum(-1) - sp) < self.top_p          # the smallest set reaching top_p
        sp = sp * keep
        pick = torch.multinomial(sp.cpu(), 1, generator=self.generator).to(si.device)
        return si.gather(-1, pick).squeeze(-1)

    def forward(self, ids, cache, positions, xmask, attention_mask=None, **vision):
        out = self.model(input_ids=ids, attention_mask=attention_mask, position_ids=positions,
                         cross_attention_mask=xmask, past_key_values=cache, use_cache=True,
                         logits_to_keep=1, **vision)
        return out.logits[:, -1].float(), out.past_key_values

    def expand(self, cache, n: int, self_layers: bool = True):
        """A cache of n rows sharing `cache`'s single row (views; the base cache is not touched).
        With self_layers=False only the image (cross-attention) layers are kept."""
        new = copy.copy(cache)
        new.layers = []
        for i, layer in enumerate(cache.layers):
            lay = copy.copy(layer)
            keep = self_layers or i in self.cross_layers
            if keep and layer.is_initialized and layer.keys is not None and layer.keys.numel():
                if i in self.cross_layers:   # read at every step: materialise once
                    lay.keys = layer.keys.expand(n, *layer.keys.shape[1:]).contiguous()
                    lay.values = layer.values.expand(n, *layer.values.shape[1:]).contiguous()
                else:                        # grown by concatenation: a view is enough
                    lay.keys = layer.keys.expand(n, *layer.keys.shape[1:])
                    lay.values = layer.values.expand(n, *layer.values.shape[1:])
            elif not keep:
                lay.keys = lay.values = None
                lay.is_initialized = False
            new.layers.append(lay)
        return new

    def select_rows(self, cache, rows: torch.Tensor) -> None:
        for layer in cache.layers:
            if layer.is_initialized and layer.keys is not None and layer.keys.numel():
                layer.keys = layer.keys.index_select(0, rows)
                layer.values = layer.values.index_select(0, rows)

    def _xmask(self, session, tokens: Sequence[int], start: int, image_at: int | None) -> torch.Tensor:
        """Cross-attention mask rows for `tokens` sitting at `start`: tokens from the image on see it."""
        m = torch.zeros((len(tokens),) + tuple(session.xrow.shape[2:]), dtype=session.xrow.dtype)
        if image_at is not None:
            m[max(0, image_at - start):] = session.xrow[0, 0]
        return m

    def crop(self, cache, length: int):
        """A view of `cache` (one row) holding only its first `length` text positions."""
        new = copy.copy(cache)
        new.layers = []
        for i, layer in enumerate(cache.layers):
            lay = copy.copy(layer)
            if i not in self.cross_layers and layer.is_initialized and layer.keys is not None:
                lay.keys, lay.values = layer.keys[..., :length, :], layer.values[..., :length, :]
            new.layers.append(lay)
        return new

    @staticmethod
    def _common(a: Sequence[int], b: Sequence[int], limit: int) -> int:
        n = 0
        for x, y in zip(a, b):
            if n >= limit or x != y:
                break
            n += 1
        return n

    def judge_prefix(self, session: "EfficientSession", rows: list[list[int]]):
        """(k, cache): the first k tokens of every judge prompt in `rows`, already encoded (one row).

        The session keeps a few encoded judge prompts and prefixes (a small prefix cache): a batch
        starts from the longest prefix it shares with any of them (a cached row cropped, no
        recomputation), and when its prompts share more than that among themselves, the rest of the
        common part is encoded once, on top, and kept. So the question and the answer so far are
        encoded once for all the judge calls of a step and only extended from step to step; the
        rows of a batch then differ only by what tells them apart (the candidates)."""
        shortest = min(len(r) for r in rows)
        j, base = 0, None
        for key, cache in session.judge_prefixes:
            n = min(self._common(key, r, shortest - 1) for r in rows)
            if n > j:
                j, base = n, cache
        k = j
        if len(rows) > 1:
            k = self._common(rows[0], rows[1], shortest - 1)
            for r in rows[2:]:
                k = self._common(rows[0], r, k)
        base = self.crop(base, j) if base is not None else self.expand(session.cache, 1, self_layers=False)
        if k - j < 8:
            return j, base
        ext = rows[0][j:k]
        row = rows[0]
        image_at = row.index(self.image_token_id) if self.image_token_id in row else None
        ids = torch.tensor([ext], dtype=torch.long, device=self.device)
        xmask = self._xmask(session, ext, j, image_at)[None].to(self.device)
        _, cache = self.forward(ids, base, torch.arange(j, k, device=self.device)[None], xmask)
        self.remember(session, rows[0][:k], cache)
        return k, cache

    def remember(self, session: "EfficientSession", key: Sequence[int], cache) -> None:
        snapshot = self.crop(cache, len(key))     # later decoding must not grow what is kept
        session.judge_prefixes = (session.judge_prefixes + [(tuple(key), snapshot)])[-4:]

    def verdicts(self, session: "EfficientSession", prompts: Sequence[str], choices,
                 max_new_tokens: int = 4) -> list[Verdict]:
        """All `prompts` (each about the session's image) as one batch over their shared prefix
        (encoded once; the rest left-padded after it); greedy, at most `max_new_tokens` tokens each;
        a row stops once it names a choice or ends."""
        if not prompts:
            return []
        with self.counting():
            session.ensure_prefix()
            self.stats.judge_calls += 1
            self.stats.judge_prompts += len(prompts)
            # tokenised as the processor tokenises a prompt (same special tokens as the naive path)
            rows = [self.tokenizer(self.chat_text(p))["input_ids"] for p in prompts]
            options = per_prompt(choices, len(prompts))
            k, pcache = self.judge_prefix(session, rows)
            b = len(rows)
            tails = [r[k:] for r in rows]
            width = max(len(t) for t in tails)
            ids = torch.full((b, width), self.pad_id, dtype=torch.long)
            tmask = torch.zeros((b, width), dtype=torch.long)
            xmask = torch.zeros((b, width) + tuple(session.xrow.shape[2:]), dtype=session.xrow.dtype)
            for i, (r, t) in enumerate(zip(rows, tails)):
                ids[i, width - len(t):] = torch.tensor(t)
                tmask[i, width - len(t):] = 1
                at = r.index(self.image_token_id) if self.image_token_id in r else None
                xmask[i, width - len(t):] = self._xmask(session, t, k, at)
            ids, tmask, xmask = ids.to(self.device), tmask.to(self.device), xmask.to(self.device)
            positions = k + (tmask.cumsum(-1) - 1).clamp(min=0)
            mask = torch.cat([torch.ones((b, k), dtype=tmask.dtype, device=self.device), tmask], dim=1)
            cache = self.expand(pcache, b)
            logits, cache = self.forward(ids, cache, positions, xmask, attention_mask=mask)
            first = logits
            if b == 1:       # a lone prompt (a last round): kept whole, the next call may share it
                self.remember(session, rows[0], cache)
            out: list[list[int]] = [[] for _ in range(b)]
            texts = [""] * b
            done = [False] * b
            last = positions[:, -1:]
            for step in range(max_new_tokens):
                nxt = torch.argmax(logits, dim=-1)
                for i in range(b):
                    if done[i]:
                        continue
                    t = int(nxt[i])
                    if t in self.eos_ids:
                        done[i] = True
                        continue
                    out[i].append(t)
                    texts[i] += self.piece(t)
                    if _first_choice(texts[i], options[i]) is not None:
                        done[i] = True
                if all(done) or step == max_new_tokens - 1:
                    break
                mask = torch.cat([mask, torch.ones((b, 1), dtype=mask.dtype, device=mask.device)], dim=1)
                last = last + 1
                logits, cache = self.forward(nxt[:, None], cache, last, xmask[:, -1:], attention_mask=mask)
            return [self._verdict(self.decode(o), first[i], options[i]) for i, o in enumerate(out)]


class EfficientSession:
    def __init__(self, core: GenerationCore, image, question: str):
        self.core, self.image, self.question = core, image, question
        self.ids: list[int] = []          # committed answer tokens
        self.pending: list[int] = []      # committed but not yet fed (fed when the next step needs them)
        self._text = ""
        self.cache = None                 # one row: prompt + committed tokens (except `pending`)
        self.logits: torch.Tensor | None = None   # next-token logits after the cache, (1, V)
        self.length = 0                   # positions in the cache
        self.xrow: torch.Tensor | None = None     # cross-attention mask row of a token after the image
        self._marks: list[tuple[int, str, torch.Tensor, int]] = []
        self.judge_prefixes: list[tuple[tuple[int, ...], Any]] = []   # shared judge-prompt prefixes

    @property
    def text(self) -> str:
        return self._text

    def ensure_prefix(self) -> None:
        if self.cache is not None:
            return
        core = self.core
        with core.counting():
            inputs = core._encode_prompt(self.image, self.question)
            ids = inputs["input_ids"]
            self.xrow = inputs["cross_attention_mask"][:, -1:].clone()
            positions = torch.arange(ids.shape[1], device=core.device)[None]
            self.logits, self.cache = core.forward(
                ids, None, positions, inputs["cross_attention_mask"], attention_mask=inputs.get("attention_mask"),
                pixel_values=inputs["pixel_values"], aspect_ratio_ids=inputs["aspect_ratio_ids"],
                aspect_ratio_mask=inputs["aspect_ratio_mask"])
            self.length = ids.shape[1]
            self.pending = list(self.ids)

    def sync(self) -> None:
        """The cache covers prompt + every committed token (the winner of the last step is fed here,
        in one forward, only when a next step needs it)."""
        self.ensure_prefix()
        if self.pending:
            with self.core.counting():
                self._feed(self.pending)
            self.pending = []

    def _feed(self, tokens: Sequence[int]) -> None:
        core = self.core
        t = torch.tensor([list(tokens)], dtype=torch.long, device=core.device)
        positions = torch.arange(self.length, self.length + t.shape[1], device=core.device)[None]
        xmask = self.xrow.expand(1, t.shape[1], *self.xrow.shape[2:])
        self.logits, self.cache = core.forward(t, self.cache, positions, xmask)
        self.length += t.shape[1]

    def sample(self, n: int, stop: Sequence[str], max_new_tokens: int,
               greedy: bool | None = None) -> list[Candidate]:
        core = self.core
        greedy = core.greedy if greedy is None else greedy
        self.sync()
        with core.counting():
            core.stats.generate_calls += 1
            cache = core.expand(self.cache, n)
            logits = self.logits.expand(n, -1)
            rows = list(range(n))                       # candidate index of each batch row
            toks: list[list[int]] = [[] for _ in range(n)]
            ends = ["budget"] * n
            scan = StopScanner(stop, core.piece, core.eos_ids)
            pos = self.length
            for step in range(max_new_tokens):
                nxt = core.choose(logits, greedy).tolist()
                keep: list[int] = []
                for r, c in enumerate(rows):
                    t = nxt[r]
                    hit = scan.feed(c, t)
                    if hit != "eos":
                        toks[c].append(t)
                    if hit is not None:
                        ends[c] = hit
                    else:
                        keep.append(r)
                if not keep or step == max_new_tokens - 1:
                    break
                if len(keep) < len(rows):
                    sel = torch.tensor(keep, device=core.device)
                    core.select_rows(cache, sel)
                    rows = [rows[r] for r in keep]
                feed = torch.tensor([[nxt[r]] for r in keep], dtype=torch.long, device=core.device)
                positions = torch.full((len(rows), 1), pos, dtype=torch.long, device=core.device)
                xmask = self.xrow.expand(len(rows), 1, *self.xrow.shape[2:])
                logits, cache = core.forward(feed, cache, positions, xmask)
                pos += 1
            return [Candidate(core.decode(toks[c]), toks[c], ends[c]) for c in range(n)]

    def commit(self, candidate: Candidate) -> None:
        self.ids += list(candidate.token_ids)
        self.pending += list(candidate.token_ids)
        self._text = self.core.decode(self.ids)

    def mark(self) -> int:
        self.sync()
        self._marks.append((len(self.ids), self._text, self.logits, self.length))
        return len(self._marks) - 1

    def rollback(self, mark: int) -> None:
        n_ids, text, logits, length = self._marks[mark]
        del self._marks[mark + 1:]
        for i, layer in enumerate(self.cache.layers):
            if i not in self.core.cross_layers and layer.is_initialized and layer.keys is not None:
                layer.keys = layer.keys[..., :length, :]
                layer.values = layer.values[..., :length, :]
        self.ids, self.pending = self.ids[:n_ids], []
        self._text, self.logits, self.length = text, logits, length


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
    """One `generate` call per candidate and per judge prompt, each from scratch."""

    batched = False

    def __init__(self, model, processor, **kwargs):
        super().__init__(model, processor, **kwargs)
        torch.manual_seed(self.seed)

    def open(self, image, question: str) -> "NaiveSession":
        return NaiveSession(self, image, question)

    def _inputs(self, image, text: str, extra: Sequence[int] = ()):
        """The processor run again on the image and the prompt; the answer so far appended as ids."""
        inputs = self.processor(images=image, text=text, return_tensors="pt")
        if extra:
            add = torch.tensor([list(extra)], dtype=torch.long)
            inputs["input_ids"] = torch.cat([inputs["input_ids"], add], dim=1)
            inputs["attention_mask"] = torch.ones_like(inputs["input_ids"])
            xm = inputs["cross_attention_mask"]
            inputs["cross_attention_mask"] = torch.cat([xm, xm[:, -1:].expand(-1, len(extra), -1, -1)], dim=1)
        return {k: v.to(self.device) for k, v in inputs.items()}

    def _generate(self, inputs, max_new_tokens: int, greedy: bool, stopping=None, logits=False, count=True):
        from transformers import StoppingCriteriaList

        kwargs: dict[str, Any] = dict(max_new_tokens=max_new_tokens, do_sample=not greedy,
                                      eos_token_id=self.eos_ids, pad_token_id=self.pad_id)
        if not greedy:
            kwargs.update(temperature=self.temperature, top_p=self.top_p, top_k=0)
        else:
            kwargs.update(temperature=None, top_p=None, top_k=None)
        if self.suppress_eos:
            kwargs["suppress_tokens"] = list(self.eos_ids)
        if stopping is not None:
            kwargs["stopping_criteria"] = StoppingCriteriaList([stopping])
        if logits:
            kwargs.update(output_logits=True, return_dict_in_generate=True)
        self.stats.generate_calls += int(count)
        return self.model.generate(**inputs, **kwargs)

    def verdicts(self, session: "NaiveSession", prompts: Sequence[str], choices,
                 max_new_tokens: int = 4) -> list[Verdict]:
        out = []
        options = per_prompt(choices, len(prompts))
        with self.counting():
            for p, opts in zip(prompts, options):
                self.stats.judge_calls += 1
                self.stats.judge_prompts += 1
                inputs = self._inputs(session.image, self.chat_text(p))
                res = self._generate(inputs, max_new_tokens, greedy=True, logits=True, count=False)
                new = [t for t in res.sequences[0, inputs["input_ids"].shape[1]:].tolist() if t not in self.eos_ids]
                out.append(self._verdict(self.decode(new), res.logits[0][0].float(), opts))
        return out


class NaiveSession:
    def __init__(self, core: NaiveCore, image, question: str):
        self.core, self.image, self.question = core, image, question
        self.prompt_text = core.chat_text(question)
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
        out = []
        with core.counting():
            for _ in range(n):
                inputs = core._inputs(self.image, self.prompt_text, self.ids)
                start = inputs["input_ids"].shape[1]
                crit = _WholeDecodeStop(core, stop, len(core.decode(inputs["input_ids"][0].tolist())))
                seq = core._generate(inputs, max_new_tokens, greedy, stopping=crit)
                new = seq[0, start:].tolist()
                end = "budget"
                if new and new[-1] in core.eos_ids:
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


def make_core(model, processor=None, mode: str = "efficient", **kwargs):
    """A core from a model path (loaded here) or from a loaded (model, processor)."""
    if isinstance(model, str) or hasattr(model, "__fspath__"):
        model, processor = load(str(model), device=kwargs.pop("device", "cpu"), dtype=kwargs.pop("dtype", None))
    cls = {"efficient": GenerationCore, "naive": NaiveCore}[mode]
    return cls(model, processor, **kwargs)
