"""Mllama's text decoder run over a pre-allocated, fixed-shape cache (the search's forward pass).

Why not the model's own `forward`: the search needs what transformers' Mllama path does not offer
together, and whose cache API changed three times across the supported releases: every batch row
at its own position (candidates of several questions decoded in one batch), a cache whose shapes
never change (one attention plan, CUDA graphs), the image's cross-attention keys/values computed
once per question and copied to the rows that need them, and log-probabilities of chosen tokens
without materialising the logits of every position. So this module runs the decoder itself, on the
model's own modules and weights (`q_proj`, `k_proj`, norms, MLPs, gates, rotary embedding,
`lm_head`: names stable across transformers 4.46-5.x); the vision tower and projector are called
as they are. `tests/pipeline/search/test_runner.py` checks it against the model's `forward`.

The arena: `rows` x `length` slots. A row holds one sequence: the self-attention keys/values of its
positions, the projected image keys/values of its question (per cross-attention layer), which
vision tokens its image's tiles cover, and where its image token sits. Tokens before the image
token attend to all vision tokens with the MLP part zeroed, and rows without an image skip the
cross-attention layers, exactly as the model's own forward does.

On CUDA the decode step of a contiguous block of rows [0, B) runs as a captured CUDA graph (one
per batch size), with attention restricted to the memory-efficient SDPA kernel (no per-shape cuDNN
plans); anything else (prefill, scattered rows, CPU) runs eagerly through the same code.
"""
from __future__ import annotations

import contextlib
import logging
import os
from typing import Sequence

import torch
import torch.nn.functional as F

log = logging.getLogger(__name__)
ALIGN = 64          # arena length and attention windows are multiples of this (kernel alignment, fewer shapes)


def parts(model):
    """(vision tower, projector, text decoder, lm_head) of a MllamaForConditionalGeneration, in the
    module layout of transformers >= 4.52 (`model.model.*`) or the one before (`model.*`)."""
    inner = getattr(model, "model", None)
    if inner is not None and hasattr(inner, "vision_model") and hasattr(inner, "language_model"):
        return inner.vision_model, inner.multi_modal_projector, inner.language_model, model.lm_head
    lm = model.language_model
    return model.vision_model, model.multi_modal_projector, lm.model, lm.lm_head


def _round_up(n: int, k: int = ALIGN) -> int:
    return -(-n // k) * k


def _rotate_half(x):
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def sdpa_backends(device: torch.device):
    """The attention kernels allowed on `device`, chosen once: on CUDA the memory-efficient kernel
    (masks, bf16/fp32, graph-capturable), the math kernel only as its fallback; cuDNN's per-shape
    plans never. On the CPU: whatever PyTorch picks."""
    if device.type != "cuda":
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])


class _Counts:
    forward_calls = forward_tokens = vision_calls = 0


class MllamaRunner:
    def __init__(self, model, rows: int = 8, length: int = 512, cuda_graphs: bool | None = None, stats=None):
        self.model = model
        self.stats = stats if stats is not None else _Counts()     # forward_calls, forward_tokens, vision_calls
        self.vision, self.projector, self.text, self.lm_head = parts(model)
        cfg = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config.text_config
        self.cross = set(getattr(cfg, "cross_attention_layers", []) or [])
        self.n_heads = cfg.num_attention_heads
        self.n_kv = cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.hidden = cfg.hidden_size
        self.layers = list(self.text.layers)
        p = next(model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.num_patches = self.vision.num_patches
        vcfg = model.config.vision_config
        self.n_vision = int(vcfg.max_num_tiles) * self.num_patches      # vision tokens of one image
        if cuda_graphs is None:      # default: on with CUDA; LLAVACOT_CUDA_GRAPHS=0 turns them off
            cuda_graphs = os.environ.get("LLAVACOT_CUDA_GRAPHS", "1") != "0"
        self.cuda_graphs = bool(cuda_graphs and self.device.type == "cuda")
        self.graphs: dict[int, "_DecodeGraph"] = {}
        self._rows: dict[tuple[int, ...], torch.Tensor] = {}
        self.R = self.L = 0
        self.free: list[int] = []
        self.ensure(rows, length)

    # --- the arena -------------------------------------------------------------------------
    def ensure(self, rows: int, length: int) -> None:
        """Room for `rows` rows of `length` positions (+1 scratch position); grows, keeping contents."""
        rows, length = max(rows, self.R), max(_round_up(length + 1), self.L)
        if rows == self.R and length == self.L:
            return
        kw = dict(device=self.device, dtype=self.dtype)
        old = getattr(self, "kv", None)
        self.kv = {}
        for i in range(len(self.layers)):
            if i in self.cross:
                shape = (rows, self.n_kv, self.n_vision, self.head_dim)
            else:
                shape = (rows, self.n_kv, length, self.head_dim)
            k, v = torch.zeros(shape, **kw), torch.zeros(shape, **kw)
            if old is not None:
                ok, ov = old[i]
                k[: ok.shape[0], :, : ok.shape[2]] = ok
                v[: ov.shape[0], :, : ov.shape[2]] = ov
            self.kv[i] = (k, v)
        allow = torch.zeros((rows, self.n_vision), dtype=torch.bool, device=self.device)
        image_at = torch.full((rows,), 1 << 30, dtype=torch.long, device=self.device)
        if old is not None:
            allow[: self.R] = self.allow
            image_at[: self.R] = self.image_at
        self.allow, self.image_at = allow, image_at
        self.free = sorted(set(self.free) | set(range(self.R, rows)))
        self.R, self.L = rows, length
        # rotary tables for every position (gathered per step; graph-friendly)
        pos = torch.arange(length, device=self.device)[None]
        cos, sin = self.text.rotary_emb(torch.zeros(1, dtype=self.dtype, device=self.device), pos)
        self.cos, self.sin = cos[0], sin[0]
        self.graphs.clear()          # captured against the old tensors

    def alloc(self, n: int, top: bool = False) -> list[int]:
        """n free rows: the lowest (decoding rows stay a contiguous block from 0) or, for short-lived
        scratch rows, the highest."""
        if len(self.free) < n:
            self.ensure(self.R + n - len(self.free) + 4, self.L)
        got = self.free[-n:] if top else self.free[:n]
        self.free = [r for r in self.free if r not in set(got)]
        return sorted(got)

    def release(self, rows: Sequence[int]) -> None:
        self.free = sorted(set(self.free) | set(rows))

    def copy_rows(self, src: int, dst: Sequence[int], length: int) -> None:
        """Rows `dst` get `src`'s first `length` positions, its image keys/values and image layout."""
        if not dst:
            return
        idx = torch.tensor(list(dst), device=self.device)
        for i, (k, v) in self.kv.items():
            if i in self.cross:      # (a clone: source and target share the tensor)
                k[idx], v[idx] = k[src].clone(), v[src].clone()
            elif length:
                k[idx, :, :length] = k[src, :, :length].clone()
                v[idx, :, :length] = v[src, :, :length].clone()
        self.allow[idx] = self.allow[src].clone()
        self.image_at[idx] = self.image_at[src].clone()

    # --- the image ---------------------------------------------------------------------------
    @torch.inference_mode()
    def set_image(self, row: int, inputs: dict | None, image_at: int | None) -> None:
        """Encode the image of `inputs` (processor output) into `row`: one vision-tower pass, its
        cross-attention keys/values projected once. None: a text-only row."""
        if inputs is None or image_at is None:
            self.image_at[row] = 1 << 30
            self.allow[row] = False
            return
        self.stats.vision_calls += 1
        pv = inputs["pixel_values"].to(self.device, self.dtype)
        states = self.vision(pixel_values=pv, aspect_ratio_ids=inputs["aspect_ratio_ids"].to(self.device),
                             aspect_ratio_mask=inputs["aspect_ratio_mask"].to(self.device))[0]
        states = self.projector(states).reshape(1, -1, self.hidden)
        if states.shape[1] != self.n_vision:
            raise ValueError(f"one image of {self.n_vision} vision tokens expected, got {states.shape[1]} "
                             "(several images in one prompt are not supported by the search)")
        for i in self.cross:
            attn = self.layers[i].cross_attn
            k = attn.k_proj(states).view(1, -1, self.n_kv, self.head_dim).transpose(1, 2)
            v = attn.v_proj(states).view(1, -1, self.n_kv, self.head_dim).transpose(1, 2)
            self.kv[i][0][row] = attn.k_norm(k)[0]
            self.kv[i][1][row] = v[0]
        tiles = inputs["cross_attention_mask"][0, image_at, 0].to(self.device).bool()     # (max tiles,)
        self.allow[row] = tiles.repeat_interleave(self.num_patches)
        self.image_at[row] = image_at

    # --- the decoder -------------------------------------------------------------------------
    def _attend(self, q, k, v, mask):
        """SDPA with grouped query heads folded into the query axis (no copy of the keys/values):
        q (B, H, T, D), k/v (B, kv, S, D), mask (B, 1, T, S) bool -> (B, T, H*D)."""
        b, h, t, d = q.shape
        g = h // self.n_kv
        q = q.reshape(b, self.n_kv, g * t, d)
        mask = mask.unsqueeze(2).expand(b, 1, g, t, mask.shape[-1]).reshape(b, 1, g * t, mask.shape[-1])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        return out.reshape(b, h, t, d).transpose(1, 2).reshape(b, t, h * d)

    def _take(self, x: torch.Tensor, rows: torch.Tensor, span: tuple[int, int] | None, window: int | None = None):
        x = x[span[0]:span[1]] if span is not None else x.index_select(0, rows)
        return x if window is None else x[:, :, :window]

    def hidden_states(self, ids: torch.Tensor, rows: torch.Tensor, start: torch.Tensor, window: int,
                      span: tuple[int, int] | None = None) -> torch.Tensor:
        """Run ids (B, T) of rows `rows` (B,) placed at positions start (B,) + 0..T-1; keys/values
        are written into the arena; attention reads positions [0, window). `span`: the rows are the
        contiguous block [span[0], span[1]) (views instead of gathers). Returns the final hidden
        states (B, T, hidden), after the last norm."""
        b, t = ids.shape
        pos = start[:, None] + torch.arange(t, device=self.device)[None]            # (B, T)
        keys = torch.arange(window, device=self.device)
        causal = (keys[None, None, :] <= pos[:, :, None]).unsqueeze(1)                # (B, 1, T, window)
        image_at = self.image_at.index_select(0, rows) if span is None else self.image_at[span[0]:span[1]]
        sees = pos >= image_at[:, None]                                               # after the image token
        allow = self._take(self.allow, rows, span)
        xmask = torch.where(sees[:, :, None], allow[:, None, :], torch.ones_like(allow[:, None, :])).unsqueeze(1)
        has_image = (image_at < (1 << 30)).to(self.dtype)[:, None, None]
        sees = sees.to(self.dtype)[..., None]
        cos, sin = self.cos[pos].unsqueeze(1), self.sin[pos].unsqueeze(1)           # (B, 1, T, D)
        h = self.text.embed_tokens(ids)
        for i, layer in enumerate(self.layers):
            k_all, v_all = self.kv[i]
            if i in self.cross:
                attn = layer.cross_attn
                x = layer.input_layernorm(h)
                q = attn.q_norm(attn.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2))
                out = attn.o_proj(self._attend(q, self._take(k_all, rows, span), self._take(v_all, rows, span), xmask))
                h = h + layer.cross_attn_attn_gate.tanh() * out * has_image
                m = layer.mlp(layer.post_attention_layernorm(h)) * sees
                h = h + layer.cross_attn_mlp_gate.tanh() * m
                continue
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_proj(x).view(b, t, self.n_heads, self.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(b, t, self.n_kv, self.head_dim).transpose(1, 2)
            q = q * cos + _rotate_half(q) * sin
            k = k * cos + _rotate_half(k) * sin
            k_all[rows[:, None], :, pos] = k.transpose(1, 2)
            v_all[rows[:, None], :, pos] = v.transpose(1, 2)
            out = self._attend(q, self._take(k_all, rows, span, window), self._take(v_all, rows, span, window), causal)
            h = h + attn.o_proj(out)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return self.text.norm(h)

    @torch.inference_mode()
    def forward(self, ids: torch.Tensor, rows: Sequence[int], start: Sequence[int], last: Sequence[int] | None = None):
        """Eager forward of padded ids (B, T); returns float logits (B, V) at column `last[b]` of
        each row (default: the last column)."""
        b, t = ids.shape
        need = max(int(s) for s in start) + t
        if need + 1 > self.L:
            self.ensure(self.R, need)
        rows_t = torch.tensor(list(rows), device=self.device)
        start_t = torch.tensor(list(start), device=self.device)
        span = (rows[0], rows[0] + b) if list(rows) == list(range(rows[0], rows[0] + b)) else None
        self.stats.forward_calls += 1
        self.stats.forward_tokens += b * t
        with sdpa_backends(self.device):
            h = self.hidden_states(ids.to(self.device), rows_t, start_t, min(self.L, _round_up(need)), span)
        at = torch.tensor([t - 1] * b if last is None else list(last), device=self.device)
        return self.lm_head(h[torch.arange(b, device=self.device), at]).float()

    @torch.inference_mode()
    def token_logprobs(self, ids: torch.Tensor, rows: Sequence[int], start: Sequence[int],
                       targets: list[list[tuple[int, int]]]) -> list[float]:
        """Eager forward of padded ids (B, T); for row b, the sum of log p(token | column) over its
        (column, token) targets. Only those columns go through `lm_head`."""
        b, t = ids.shape
        need = max(int(s) for s in start) + t
        if need + 1 > self.L:
            self.ensure(self.R, need)
        rows_t = torch.tensor(list(rows), device=self.device)
        span = (rows[0], rows[0] + b) if list(rows) == list(range(rows[0], rows[0] + b)) else None
        self.stats.forward_calls += 1
        self.stats.forward_tokens += b * t
        with sdpa_backends(self.device):
            h = self.hidden_states(ids.to(self.device), rows_t, torch.tensor(list(start), device=self.device),
                                   min(self.L, _round_up(need)), span)
        flat = [(r, c, tok) for r, tg in enumerate(targets) for c, tok in tg]
        if not flat:
            return [0.0] * b
        r_idx = torch.tensor([f[0] for f in flat], device=self.device)
        c_idx = torch.tensor([f[1] for f in flat], device=self.device)
        tok = torch.tensor([f[2] for f in flat], device=self.device)
        lp = torch.log_softmax(self.lm_head(h[r_idx, c_idx]).float(), dim=-1).gather(-1, tok[:, None])[:, 0]
        out = torch.zeros(b, device=self.device).index_add_(0, r_idx, lp)
        return out.tolist()

    # --- one decoding step --------------------------------------------------------------------
    @torch.inference_mode()
    def decode(self, tokens: torch.Tensor, rows: Sequence[int], positions: torch.Tensor,
               window: int | None = None) -> torch.Tensor:
        """One new token per row (tokens (B,), positions (B,) on the device) -> float logits (B, V).
        A block of rows [0, B) with only free rows up to the next power of two runs as a CUDA graph."""
        b = len(rows)
        self.stats.forward_calls += 1
        self.stats.forward_tokens += b
        if self.cuda_graphs and list(rows) == list(range(b)):
            bucket = 1 << (b - 1).bit_length()
            if bucket <= self.R and all(r in self.free for r in range(b, bucket)):
                graph = self.graphs.get(bucket)
                if graph is None:
                    graph = self.graphs[bucket] = _DecodeGraph.capture(self, bucket)
                if graph is not None:
                    return graph.run(tokens, positions)[:b]
                self.cuda_graphs = False        # capture failed (logged): eager from now on
        key = tuple(rows)
        rows_t = self._rows.get(key)
        if rows_t is None:             # uploaded once per set of rows, not every step
            rows_t = self._rows[key] = torch.tensor(key, device=self.device)
        span = (rows[0], rows[0] + b) if list(rows) == list(range(rows[0], rows[0] + b)) else None
        with sdpa_backends(self.device):
            h = self.hidden_states(tokens[:, None], rows_t, positions, min(self.L, _round_up(window or self.L)), span)
        return self.lm_head(h[:, -1]).float()


class _DecodeGraph:
    """The decode step of rows [0, B) captured once: static token/position buffers in, logits out.
    Attention reads the whole arena length, so the shapes never change."""

    def __init__(self, graph, step, tokens, positions, logits, scratch: int):
        self.graph, self.tokens, self.positions, self.logits = graph, tokens, positions, logits
        self.scratch = scratch
        # the captured function, and through it every tensor made outside the capture that it reads
        # (the row indices): a replay reads them by address, so they live as long as the graph
        # (freed, their memory would be handed to other tensors)
        self.step = step

    @classmethod
    def capture(cls, runner: MllamaRunner, b: int) -> "_DecodeGraph | None":
        try:
            tokens = torch.zeros(b, dtype=torch.long, device=runner.device)
            # warm-up and capture write at the scratch position, never over a row's contents
            positions = torch.full((b,), runner.L - 1, dtype=torch.long, device=runner.device)
            rows = torch.arange(b, device=runner.device)

            def step():
                with sdpa_backends(runner.device):
                    h = runner.hidden_states(tokens[:, None], rows, positions, runner.L, (0, b))
                return runner.lm_head(h[:, -1]).float()

            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream), torch.inference_mode():
                for _ in range(2):
                    step()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.inference_mode():
                logits = step()
            return cls(graph, step, tokens, positions, logits, runner.L - 1)
        except Exception as exc:  # noqa: BLE001 - an optional speed-up: say so and run eagerly
            log.warning("CUDA graph capture of the decode step (batch %d) failed, decoding eagerly: %s", b, exc)
            return None

    def run(self, tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        n = tokens.shape[0]
        self.tokens[:n].copy_(tokens)
        self.positions[:n].copy_(positions)
        if n < self.tokens.shape[0]:          # free rows of the bucket write at the scratch position
            self.positions[n:].fill_(self.scratch)
        self.graph.replay()
        return self.logits
