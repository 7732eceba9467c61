"""Difformer's degeneration score (DGS) and the search of the noise rescaling factor F.

Pure torch/numpy (no fairseq).  Paper: Difformer §3.2 (Definitions 1-2, Eq. 3), App. C.8 (Eq. 8),
App. D (Algorithms 1-2, Table 19).

Degenerated model (Definition 1).  For a noised embedding ``z`` it returns, independently of the
condition and the context, ``argmin_y L(z, e_y)``.  The readings of ``L`` all reduce to
``argmax_y z·e_y − c·||e_y||²`` (``c`` = :func:`rule_coefficient`):

* ``"distance"``: the nearest embedding, ``L = ||z − e_y||²``  →  c = 1/2.
* ``"distance+rounding"`` (default): ``L = ||z − e_y||² − log p(y|z)``, ``p(y|z) = softmax(z·Eᵀ)``,
  with ``||·||²`` the mean squared error over the d features as in the proof of Theorem 1
  (App. A): ``(1/d)||z − e_y||² − z·e_y + logsumexp(z·Eᵀ)``  →  c = 1/(d + 2).
* ``"distance+rounding-sum"``: the same with a summed squared error  →  c = 1/3.

With the default timestep set, ``"distance+rounding"`` reproduces every cell of Table 19 within one
ΔF = 0.5 step (32-34 of the 54 exactly, seeds 0-3) and Table 2 (sqrt 0.78, linear 0.47 at V=10K);
``"distance"`` misses 4-6 cells by 1.0 and gives sqrt 0.75, linear 0.45.

Degeneration score (Definition 2, Algorithm 2).  Embeddings ``e ~ N(0, σ_e² I)`` (V x d); for each
query token v (all V, or a random subset) and each of N noise draws ε,
``z_t = sqrt(ᾱ'_t) e_v + sqrt(β̄'_t) ε``;  ``DGS_t = P(f_dg(z_t) = v)``;  ``DGS = mean_{t∈𝒯} DGS_t``.
𝒯: ``num_timesteps`` evenly spaced steps of 0..T, both ends included (default 51: {0, 40, ..., 2000}
for T = 2000; t = 0 is the clean state, DGS_0 = 1, so the subset matters for small DGS_max: every
t = 1..T instead lowers the 0.05 row of linear/cosine by 3-7).  Rescaling (through
:func:`schedules.rescale`): Eq. 3  ``ᾱ' = ᾱ, β̄' = F² (1 − ᾱ)``;  Eq. 8 (variance preserving)
``ᾱ' = ᾱ / (ᾱ + F² β̄), β̄' = F² β̄ / (ᾱ + F² β̄)``.  A per-position table ``ᾱ[t, i]`` (adaptive
schedule) is scored as the mean over positions (or ``max_positions`` evenly spaced ones) of the
per-position DGS.

How it is computed (exact per sample, fast).  Write ``a = sqrt(ᾱ')``, ``b = sqrt(β̄')``.  For a
sample (v, ε) the score margin of a competitor u is affine in (a, b):
``D_u = a ΔG_u + b ΔH_u − c Δn_u`` with ``ΔG_u = e_v·e_u − ||e_v||²``,
``ΔH_u = ε·(e_u − e_v)``, ``Δn_u = ||e_u||² − ||e_v||²``; the sample is classified correctly iff
every ``D_u < 0``, i.e. iff ``lo(a) < b < hi(a)`` with ``hi(a) = min_{ΔH_u>0} ℓ_u(a)``,
``lo(a) = max_{ΔH_u<0} ℓ_u(a)`` and the lines ``ℓ_u(a) = (c Δn_u − a ΔG_u) / ΔH_u``.  So two
inner-product matrices (chunked float32 matmuls) per sample set answer for *every* schedule,
timestep and rescaling factor.  ``lo``/``hi`` are computed exactly on ``num_nodes`` signal levels
a ∈ [0, 1] from a few candidate lines per sample (largest roots, and smallest positive ℓ at a few
probe levels); a node is accepted only when the candidate envelope provably equals the full one
(bounds from the probes), otherwise it is recomputed over all V lines.  Between nodes lo/hi are
linearly interpolated (hi is concave, lo convex; second-order error with 129 nodes).  DGS(F) then
costs one comparison per (sample, timestep), and for Eq. 3 a binary search in sorted end points.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import torch

from .schedules import rescale

ArrayLike = Union[np.ndarray, torch.Tensor, Sequence[float]]

RULES = ("distance", "distance+rounding", "distance+rounding-sum")
DEFAULT_RULE = "distance+rounding"
DEFAULT_NUM_QUERIES = 2048
DEFAULT_MAX_FACTOR = 100.0
DEFAULT_MAX_POSITIONS = 8
DEFAULT_NUM_TIMESTEPS = 51
_BIG = 1e30  # "no constraint" sentinel for the lines
_CLIP = 1e6  # stored lo/hi are clipped to ±_CLIP (b = sqrt(β̄') never gets near it)


class ThresholdNotReachedError(ValueError):
    """No rescaling factor up to ``max_factor`` brings DGS to ``dgs_max`` or below."""

    def __init__(self, dgs_max: float, max_factor: float, best_factor: float, best_dgs: float):
        self.dgs_max = dgs_max
        self.max_factor = max_factor
        self.best_factor = best_factor
        self.best_dgs = best_dgs
        super().__init__(
            f"DGS_max={dgs_max:g} is not reached for any rescaling factor F <= {max_factor:g}: "
            f"the best is F={best_factor:g} with DGS={best_dgs:.4f} "
            f"(raise max_factor or the threshold)"
        )


def rule_coefficient(rule: str, dim: int) -> float:
    """``c`` of the degenerated model ``argmax_y z·e_y − c ||e_y||²`` for a Definition-1 reading."""
    if rule == "distance":
        return 0.5
    if rule == "distance+rounding":
        return 1.0 / (dim + 2.0)
    if rule == "distance+rounding-sum":
        return 1.0 / 3.0
    raise ValueError(f"unknown degenerated-model rule {rule!r}; choose one of: {', '.join(RULES)}")


def _check_sizes(vocab_size: int, dim: int) -> None:
    for name, value in (("vocab_size", vocab_size), ("dim", dim)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_dgs_max(dgs_max: float) -> None:
    if not (isinstance(dgs_max, (int, float, np.floating)) and 0.0 < float(dgs_max) < 1.0):
        raise ValueError(f"dgs_max must be a number in the open interval (0, 1), got {dgs_max!r}")


def draw_samples(
    vocab_size: int,
    dim: int,
    *,
    sigma_e: float = 1.0,
    num_queries: Optional[int] = DEFAULT_NUM_QUERIES,
    draws: int = 1,
    seed: int = 0,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The Monte-Carlo draw: embeddings ``E`` [V, d] ~ N(0, σ_e²), query tokens [S] and noise [S, d].

    Queries are all V tokens (Algorithm 2) when ``num_queries`` is None or >= V, else a random
    subset of ``num_queries`` distinct tokens; each query token gets ``draws`` noise samples (S =
    queries x draws).  Everything comes from one seeded ``torch.Generator``.
    """
    _check_sizes(vocab_size, dim)
    if draws < 1:
        raise ValueError(f"draws must be >= 1, got {draws}")
    if num_queries is not None and num_queries < 1:
        raise ValueError(f"num_queries must be >= 1 (or None for all tokens), got {num_queries}")
    gen = torch.Generator().manual_seed(int(seed))
    emb = torch.randn(vocab_size, dim, generator=gen) * float(sigma_e)
    if num_queries is None or num_queries >= vocab_size:
        tokens = torch.arange(vocab_size)
    else:
        tokens = torch.randperm(vocab_size, generator=gen)[:num_queries]
    tokens = tokens.repeat_interleave(draws)
    noise = torch.randn(tokens.numel(), dim, generator=gen)
    return emb, tokens, noise


def _as_alpha_table(alpha_bar: ArrayLike) -> np.ndarray:
    table = alpha_bar.detach().cpu().numpy() if isinstance(alpha_bar, torch.Tensor) else alpha_bar
    table = np.asarray(table, dtype=np.float64)
    if table.ndim not in (1, 2) or table.shape[0] < 2:
        raise ValueError(
            "alpha_bar must be a [T+1] table (named schedule) or a [T+1, P] per-position table "
            f"with T >= 1, got shape {tuple(table.shape)}"
        )
    if not np.all(np.isfinite(table)) or table.min() < 0.0 or table.max() > 1.0:
        raise ValueError("alpha_bar values must be finite and lie in [0, 1]")
    return table


def select_timesteps(steps: int, num_timesteps: Optional[int] = DEFAULT_NUM_TIMESTEPS) -> np.ndarray:
    """The timestep set 𝒯 of Algorithm 2, drawn from t = 0..T (Definition 2 integrates over [0, T]).

    ``num_timesteps`` evenly spaced steps including both ends (``round(linspace(0, T, n))``); the
    default 51 gives 𝒯 = {0, 40, ..., 2000} for T = 2000, the set that reproduces Table 19.  None:
    every t = 0..T.
    """
    if num_timesteps is None or num_timesteps >= steps + 1:
        return np.arange(0, steps + 1)
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1 (or None for every t), got {num_timesteps}")
    return np.unique(np.round(np.linspace(0, steps, num_timesteps)).astype(np.int64))


def _select_positions(num_positions: int, max_positions: Optional[int]) -> np.ndarray:
    if max_positions is None or max_positions >= num_positions:
        return np.arange(num_positions)
    if max_positions < 1:
        raise ValueError(f"max_positions must be >= 1, got {max_positions}")
    return np.unique(np.round(np.linspace(0, num_positions - 1, max_positions)).astype(np.int64))


def default_probes(coef: float, dim: int, num_nodes: int = 129) -> List[float]:
    """Probe levels a_j for the candidate search, evenly spaced in s = 1/a.

    Between probes the bound on the non-candidate lines uses ℓ/a = ΔG-slope + c·Δn/(ΔH·a): the
    spacing keeps the change of the c-term small (≈ 5 % of the slope), from a = 1 down to where the
    roots ``cΔn/|ΔG|`` (≈ c·sqrt(2/d) in size) leave nothing to certify.
    """
    scale = max(coef * math.sqrt(2.0 / dim), 1e-12)
    s_max = min(float(num_nodes - 1), 1.0 / max(2.0 * scale, 1.0 / (num_nodes - 1)))
    ds = min(max(0.05 / scale, 0.5), max(s_max - 1.0, 0.5))
    count = min(12, int(math.ceil((s_max - 1.0) / ds)) + 1)
    return sorted({1.0 / s for s in np.linspace(1.0, s_max, max(count, 1))})


class DegenerationEstimator:
    """Monte-Carlo DGS estimator for one embedding draw (V, d, σ_e, rule, seed).

    Building it does the O(S·V·d) work once (S = samples); afterwards :meth:`dgs_t` / :meth:`dgs`
    evaluate any ᾱ table and rescaling factor in O(S·|timesteps|).
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int,
        *,
        rule: str = DEFAULT_RULE,
        sigma_e: float = 1.0,
        num_queries: Optional[int] = DEFAULT_NUM_QUERIES,
        draws: int = 1,
        seed: int = 0,
        num_nodes: int = 129,
        candidates: int = 24,
        probes: Optional[Sequence[float]] = None,
        chunk_elements: int = 4_000_000,
        progress: Optional[Callable[[int], None]] = None,
    ) -> None:
        _check_sizes(vocab_size, dim)
        if sigma_e <= 0:
            raise ValueError(f"sigma_e must be > 0, got {sigma_e}")
        if num_nodes < 2:
            raise ValueError(f"num_nodes must be >= 2, got {num_nodes}")
        if candidates < 1:
            raise ValueError(f"candidates must be >= 1, got {candidates}")
        self.vocab_size, self.dim, self.rule = int(vocab_size), int(dim), rule
        self.coef = rule_coefficient(rule, dim)
        self.sigma_e, self.seed, self.draws = float(sigma_e), int(seed), int(draws)
        self.num_queries = num_queries
        self.nodes = torch.linspace(0.0, 1.0, num_nodes, dtype=torch.float64)
        if probes is None:
            probes = default_probes(self.coef, dim, num_nodes)
        # probes are snapped to nodes (the bound at a probe is then direct)
        k = num_nodes - 1
        snapped = sorted({min(k, max(1, int(round(float(p) * k)))) for p in probes})
        if not probes or min(probes) <= 0 or max(probes) > 1:
            raise ValueError("probes must lie in (0, 1]")
        self.probe_index = torch.tensor(snapped)
        self.probes = self.nodes[self.probe_index]
        self.candidates = int(candidates)
        t0 = time.perf_counter()
        emb, tokens, noise = draw_samples(
            vocab_size, dim, sigma_e=sigma_e, num_queries=num_queries, draws=draws, seed=seed
        )
        self.num_samples = tokens.numel()
        self.lo = torch.empty(self.num_samples, num_nodes)
        self.hi = torch.empty(self.num_samples, num_nodes)
        self.recomputed = 0  # (sample, node) pairs that needed all V lines
        chunk = max(1, int(chunk_elements) // max(vocab_size, 1))
        norms = (emb * emb).sum(1)
        for start in range(0, self.num_samples, chunk):
            stop = min(start + chunk, self.num_samples)
            lo, hi = self._chunk(emb, norms, tokens[start:stop], noise[start:stop])
            self.lo[start:stop], self.hi[start:stop] = lo, hi
            if progress is not None:
                progress(stop - start)
        self.build_seconds = time.perf_counter() - t0

    # -- construction -------------------------------------------------------------------------
    def _chunk(
        self, emb: torch.Tensor, norms: torch.Tensor, tokens: torch.Tensor, noise: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """lo/hi at every node for a chunk of samples (see the module docstring).

        Line u: ``ℓ_u(a) = N_u(a) / ΔH_u`` with ``N_u(a) = cΔn_u − aΔG_u``; hi-side if ΔH_u >= 0.
        Candidates S: the ``K`` largest roots ``cΔn_u/ΔG_u`` (A = the (K+1)-th: every other line
        has N_u(a) > 0 for a > A, so it only bounds b from above) and, at each probe a_j, the
        ``K`` largest ``ΔH_u / N_u(a_j)`` (= smallest positive ℓ; τ_j = 1/(K+1)-th value bounds all
        other hi-side lines there).  Between probes a line is linear in a and ℓ/a linear in 1/a.
        """
        qn, vocab, kk = tokens.numel(), emb.shape[0], self.candidates
        rows = torch.arange(qn)
        c = self.coef
        d_g = emb[tokens] @ emb.T
        d_g -= norms[tokens][:, None]  # ΔG_u = e_v·e_u − ||e_v||²
        d_h = noise @ emb.T
        d_h -= d_h[rows, tokens][:, None]  # ΔH_u = ε·(e_u − e_v)
        cdn = (norms * c)[None, :] - (norms[tokens] * c)[:, None]  # cΔn_u
        # the sample's own token: a line that never binds (N > 0, lo side, root < 0)
        d_g[rows, tokens] = -_BIG
        d_h[rows, tokens] = -1.0
        cdn[rows, tokens] = _BIG
        nodes = self.nodes.to(torch.float32)
        if vocab - 1 <= kk:  # every line is a candidate: exact, nothing to bound
            cand = torch.arange(vocab).expand(qn, -1)
            certify = None
        else:
            g_max = d_g.amax(1).double()  # >= 0: a competitor more aligned with e_v than e_v itself
            h_max = d_h.amax(1).double()
            roots = torch.div(cdn, d_g)
            vals, idx_root = torch.topk(roots, kk + 1, dim=1)
            del roots
            a_root = vals[:, kk].double()
            idx_list, taus = [idx_root[:, :kk]], []
            for a in self.probes.tolist():
                key = torch.add(cdn, d_g, alpha=-a)
                torch.div(d_h, key, out=key)  # ΔH/N: the largest are the smallest positive ℓ
                vals, idx = torch.topk(key, kk + 1, dim=1)
                idx_list.append(idx[:, :kk])
                kth = vals[:, kk].double()
                taus.append(torch.where(kth > 0, 1.0 / kth, math.inf))
            del key
            cand = torch.cat(idx_list, dim=1)
            certify = (g_max, h_max, a_root, torch.stack(taus, 1))
        c_g, c_h, c_n = d_g.gather(1, cand), d_h.gather(1, cand), cdn.gather(1, cand)
        hi, lo = self._envelope(c_g, c_h, c_n, nodes)
        if certify is not None:
            ok = self._certified(hi, lo, *certify)
            bad = (~ok).nonzero()
            if bad.numel():
                self.recomputed += bad.shape[0]
                for part in torch.split(bad, max(1, 2_000_000 // vocab)):
                    r, n = part[:, 0], part[:, 1]
                    h1, l1 = self._envelope(d_g[r], d_h[r], cdn[r], nodes[n][:, None], diagonal=True)
                    hi[r, n], lo[r, n] = h1, l1
        empty = hi <= torch.clamp(lo, min=0.0)
        hi = torch.where(empty, 0.0, hi).clamp(-_CLIP, _CLIP)
        lo = torch.where(empty, 0.0, lo).clamp(-_CLIP, _CLIP)
        return lo.float(), hi.float()

    @staticmethod
    def _envelope(
        d_g: torch.Tensor, d_h: torch.Tensor, cdn: torch.Tensor, a: torch.Tensor, diagonal: bool = False
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        """hi(a) = min over hi-side lines of ℓ(a), lo(a) = max over lo-side lines.

        Shapes: lines [R, L]; ``a`` [A] (all nodes for every row) or, with ``diagonal``, [R, 1].
        """
        hi_side = d_h >= 0
        if diagonal:
            ell = torch.nan_to_num((cdn - a * d_g) / d_h, nan=0.0)
            return (
                torch.where(hi_side, ell, math.inf).amin(1).double(),
                torch.where(hi_side, -math.inf, ell).amax(1).double(),
            )
        slope = torch.div(d_g, d_h).neg_()  # ℓ(a) = icpt + a·slope
        icpt = torch.div(cdn, d_h)
        p_hi, q_hi = torch.where(hi_side, slope, 0.0), torch.where(hi_side, icpt, math.inf)
        p_lo, q_lo = torch.where(hi_side, 0.0, slope), torch.where(hi_side, -math.inf, icpt)
        hi = torch.empty(d_g.shape[0], a.numel(), dtype=torch.float64)
        lo = torch.empty_like(hi)
        block = max(1, 4_000_000 // max(d_g.numel(), 1))
        for s in range(0, a.numel(), block):
            nd = a[s : s + block][None, :, None]
            hi[:, s : s + block] = torch.addcmul(q_hi[:, None, :], nd, p_hi[:, None, :]).amin(2)
            lo[:, s : s + block] = torch.addcmul(q_lo[:, None, :], nd, p_lo[:, None, :]).amax(2)
        return hi, lo

    def _certified(
        self,
        hi: torch.Tensor,
        lo: torch.Tensor,
        g_max: torch.Tensor,
        h_max: torch.Tensor,
        a_root: torch.Tensor,
        tau: torch.Tensor,
    ) -> torch.Tensor:
        """[samples, nodes]: True where the candidate envelope is the exact answer for b >= 0.

        Exact when the candidates already leave no b >= 0 (more lines only shrink the interval),
        or when a > A (no other line bounds b from below) and hi_S(a) <= B(a), a lower bound of
        every other hi-side line: the probe bounds τ_j (linear in a, and ℓ/a linear in 1/a between
        probes), and everywhere above A the crude min|ΔG| (a − A) / max ΔH.
        """
        a = self.nodes[None, :]
        empty = hi <= torch.clamp(lo, min=0.0)
        valid = (a > a_root[:, None]) & (g_max < 0)[:, None]
        bound = torch.where(h_max[:, None] > 0, (-g_max)[:, None] * (a - a_root[:, None]) / h_max[:, None], math.inf)
        probes = self.probes
        pv = probes[None, :] > a_root[:, None]  # probe bounds need the probe above A
        tau = torch.where(pv, tau, -math.inf)
        bound = bound.clone()
        bound[:, self.probe_index] = torch.maximum(bound[:, self.probe_index], tau)
        for j in range(len(probes) - 1):
            i0, i1 = int(self.probe_index[j]), int(self.probe_index[j + 1])
            if i1 - i0 < 2:
                continue
            seg_a = a[:, i0 + 1 : i1]
            t0, t1 = tau[:, j : j + 1], tau[:, j + 1 : j + 2]
            lin = torch.minimum(t0, t1)
            ratio = seg_a * torch.minimum(t0 / probes[j], t1 / probes[j + 1])
            bound[:, i0 + 1 : i1] = torch.maximum(bound[:, i0 + 1 : i1], torch.maximum(lin, ratio))
        return empty | (valid & (hi <= bound))

    # -- evaluation ---------------------------------------------------------------------------
    def _interp(self, a: np.ndarray) -> Tuple[torch.Tensor, torch.Tensor]:
        """lo(a), hi(a) for every sample at the signal levels ``a`` (linear between nodes)."""
        k = self.nodes.numel() - 1
        pos = np.clip(np.asarray(a, dtype=np.float64), 0.0, 1.0) * k
        left = np.minimum(np.floor(pos).astype(np.int64), k - 1)
        w = torch.from_numpy(pos - left).float()[None, :]
        left_t = torch.from_numpy(left)
        lo = torch.lerp(self.lo[:, left_t], self.lo[:, left_t + 1], w)
        hi = torch.lerp(self.hi[:, left_t], self.hi[:, left_t + 1], w)
        return lo, hi

    def accuracy(self, a: ArrayLike, b: ArrayLike, chunk_points: int = 0) -> np.ndarray:
        """P(f_dg(a·e_v + b·ε) = v) for each point (a, b) (signal and noise std), averaged over samples."""
        a = np.asarray(a, dtype=np.float64).ravel()
        b = np.asarray(b, dtype=np.float64).ravel()
        if a.shape != b.shape:
            raise ValueError("a and b must have the same number of points")
        step = chunk_points or max(1, 20_000_000 // max(self.num_samples, 1))
        out = np.empty(a.shape[0])
        for s in range(0, a.shape[0], step):
            lo, hi = self._interp(a[s : s + step])
            bb = torch.from_numpy(b[s : s + step]).float()[None, :]
            out[s : s + step] = ((lo < bb) & (bb < hi)).double().mean(0).numpy()
        return out

    def curve(
        self,
        alpha_bar: ArrayLike,
        *,
        variance_preserving: bool = False,
        num_timesteps: Optional[int] = DEFAULT_NUM_TIMESTEPS,
        max_positions: Optional[int] = DEFAULT_MAX_POSITIONS,
    ) -> "DGSCurve":
        """DGS as a function of F for one ᾱ table (memoised; see :class:`DGSCurve`)."""
        return DGSCurve(self, alpha_bar, variance_preserving, num_timesteps, max_positions)

    def dgs_t(self, alpha_bar: ArrayLike, factor: float = 1.0, **kwargs) -> Tuple[np.ndarray, np.ndarray]:
        """(timesteps, DGS_t) for the rescaled table; kwargs as in :meth:`curve`."""
        curve = self.curve(alpha_bar, **kwargs)
        return curve.timesteps, curve.per_t(factor)

    def dgs(self, alpha_bar: ArrayLike, factor: float = 1.0, **kwargs) -> float:
        """DGS(ᾱ', β̄') = mean over the timestep subset of DGS_t (Definition 2, Algorithm 2)."""
        return self.curve(alpha_bar, **kwargs)(factor)


class DGSCurve:
    """F ↦ DGS for one ᾱ table, a rescaling variant and a timestep/position subset (memoised).

    A 1-D table [T+1] is a named schedule.  A 2-D table [T+1, P] is a per-position (adaptive)
    schedule: every position is its own schedule and the DGS is averaged over the positions (all
    of them, or ``max_positions`` evenly spaced ones), i.e. over (t, position) pairs.
    """

    def __init__(
        self,
        estimator: DegenerationEstimator,
        alpha_bar: ArrayLike,
        variance_preserving: bool = False,
        num_timesteps: Optional[int] = DEFAULT_NUM_TIMESTEPS,
        max_positions: Optional[int] = DEFAULT_MAX_POSITIONS,
    ) -> None:
        table = _as_alpha_table(alpha_bar)
        self.estimator = estimator
        self.variance_preserving = bool(variance_preserving)
        self.timesteps = select_timesteps(table.shape[0] - 1, num_timesteps)
        sub = table[self.timesteps]
        if sub.ndim == 2:
            self.positions = _select_positions(sub.shape[1], max_positions)
            sub = sub[:, self.positions]
        else:
            self.positions = None
            sub = sub[:, None]
        self.alpha = sub  # [|timesteps|, P']
        self.cache: Dict[float, np.ndarray] = {}
        self._ends: Optional[tuple] = None
        if not self.variance_preserving and estimator.num_samples * sub.size <= 30_000_000:
            # Eq. 3 keeps ᾱ and b = F·sqrt(1 − ᾱ): a sample is right at (t, F) iff
            # lo/sqrt(1 − ᾱ_t) < F < hi/sqrt(1 − ᾱ_t); sorting these ends gives DGS(F) for any F.
            lo, hi = estimator._interp(np.sqrt(sub.ravel()))
            beta = torch.from_numpy(np.sqrt(1.0 - sub.ravel())).float()[None, :]
            clean = beta == 0  # ᾱ = 1: b = 0 whatever F
            never = (hi <= 0) | (lo >= hi)  # no b >= 0 is right: keep such entries out of the count
            inside = (lo < 0) & (hi > 0)
            low = torch.where(clean, torch.where(inside, -math.inf, math.inf), lo / beta)
            high = torch.where(clean, math.inf, hi / beta)
            low = torch.where(never, math.inf, low)
            high = torch.where(never, math.inf, high)
            low_np, high_np = low.numpy().ravel(), high.numpy().ravel()
            self._ends = (
                low,
                high,
                int((low_np < 0).sum()),  # F >= 0: these always count, sort only the rest
                np.sort(low_np[(low_np >= 0) & np.isfinite(low_np)]),
                int((high_np <= 0).sum()),
                np.sort(high_np[(high_np > 0) & np.isfinite(high_np)]),
            )

    def _rescaled(self, factor: float) -> Tuple[np.ndarray, np.ndarray]:
        with np.errstate(invalid="ignore", divide="ignore"):  # VP with ᾱ = 0 and F = 0
            a_bar, b_bar = rescale(self.alpha, factor, self.variance_preserving)
        a_bar, b_bar = np.nan_to_num(a_bar), np.nan_to_num(b_bar)
        return np.sqrt(np.clip(a_bar, 0.0, None)).ravel(), np.sqrt(np.clip(b_bar, 0.0, None)).ravel()

    @staticmethod
    def _check_factor(factor: float) -> float:
        factor = float(factor)
        if factor < 0 or not math.isfinite(factor):
            raise ValueError(f"rescaling factor must be a finite number >= 0, got {factor}")
        return factor

    def per_t(self, factor: float) -> np.ndarray:
        """DGS_t for every timestep of the subset (averaged over positions)."""
        factor = self._check_factor(factor)
        if factor not in self.cache:
            if self._ends is not None:
                low, high = self._ends[0], self._ends[1]
                f = torch.tensor(factor, dtype=torch.float32)
                acc = ((low < f) & (f < high)).sum(0).double().div_(low.shape[0]).numpy()
            else:
                acc = self.estimator.accuracy(*self._rescaled(factor))
            self.cache[factor] = acc.reshape(self.alpha.shape).mean(1)
        return self.cache[factor]

    def __call__(self, factor: float) -> float:
        """DGS = mean_t DGS_t (Definition 2 over the timestep subset)."""
        factor = self._check_factor(factor)
        if self._ends is None or factor in self.cache:
            return float(self.per_t(factor).mean())
        low, _, low_neg, low_sorted, high_nonpos, high_sorted = self._ends
        f = np.float32(factor)
        below = low_neg + int(np.searchsorted(low_sorted, f, side="left"))  # #{low < F}
        above = high_nonpos + int(np.searchsorted(high_sorted, f, side="right"))  # #{high <= F}
        return (below - above) / low.numel()


@dataclass(frozen=True)
class RescalingResult:
    """Outcome of :func:`search_rescaling_factor`."""

    factor: float  # smallest F on the grid start + k·step with DGS <= dgs_max
    dgs: float  # DGS at that F
    dgs_max: float
    timesteps: np.ndarray = field(repr=False)  # the timestep subset
    dgs_t: np.ndarray = field(repr=False)  # DGS_t at ``factor``
    evaluations: Dict[float, float] = field(default_factory=dict, repr=False)  # every F tried


_ESTIMATORS: Dict[tuple, DegenerationEstimator] = {}


def get_estimator(vocab_size: int, dim: int, **kwargs) -> DegenerationEstimator:
    """A :class:`DegenerationEstimator`, cached per (V, d, options) (the 4 most recent)."""
    _check_sizes(vocab_size, dim)
    progress = kwargs.pop("progress", None)
    key = (int(vocab_size), int(dim)) + tuple(sorted((k, repr(v)) for k, v in kwargs.items()))
    if key not in _ESTIMATORS:
        while len(_ESTIMATORS) >= 4:
            _ESTIMATORS.pop(next(iter(_ESTIMATORS)))
        _ESTIMATORS[key] = DegenerationEstimator(vocab_size, dim, progress=progress, **kwargs)
    return _ESTIMATORS[key]


def degeneration_score(
    alpha_bar: ArrayLike,
    factor: float = 1.0,
    *,
    vocab_size: int,
    dim: int,
    variance_preserving: bool = False,
    num_timesteps: Optional[int] = DEFAULT_NUM_TIMESTEPS,
    max_positions: Optional[int] = DEFAULT_MAX_POSITIONS,
    **estimator_kwargs,
) -> float:
    """DGS of ``alpha_bar`` rescaled by ``factor`` (Eq. 3, or Eq. 8 if ``variance_preserving``).

    ``estimator_kwargs``: rule, sigma_e, num_queries, draws, seed, ... (see
    :class:`DegenerationEstimator`).
    """
    est = get_estimator(vocab_size, dim, **estimator_kwargs)
    return est.dgs(
        alpha_bar,
        factor,
        variance_preserving=variance_preserving,
        num_timesteps=num_timesteps,
        max_positions=max_positions,
    )


def _factor_grid(start: float, step: float, max_factor: float) -> np.ndarray:
    if not (step > 0 and math.isfinite(step)):
        raise ValueError(f"step must be a finite number > 0, got {step}")
    if not (start >= 0 and math.isfinite(start)):
        raise ValueError(f"start must be a finite number >= 0, got {start}")
    if not (max_factor >= start and math.isfinite(max_factor)):
        raise ValueError(f"max_factor must be a finite number >= start ({start}), got {max_factor}")
    count = int(math.floor((max_factor - start) / step + 1e-9)) + 1
    return np.round(start + step * np.arange(count), 10)


def search_on_curve(
    curve: Callable[[float], float],
    dgs_max: float,
    *,
    step: float = 0.5,
    max_factor: float = DEFAULT_MAX_FACTOR,
    bisection: bool = False,
    start: float = 1.0,
) -> Tuple[float, float, Dict[float, float]]:
    """Smallest F on the grid ``start + k·step`` (<= max_factor) with ``curve(F) <= dgs_max``.

    Linear scan = Algorithm 1; ``bisection`` assumes DGS decreasing in F and bisects on the same
    grid, so both return the same F.  Returns (F, DGS(F), {F: DGS} of every evaluation).
    """
    _check_dgs_max(dgs_max)
    grid = _factor_grid(start, step, max_factor)
    seen: Dict[float, float] = {}

    def value(i: int) -> float:
        f = float(grid[i])
        if f not in seen:
            seen[f] = float(curve(f))
        return seen[f]

    if not bisection:
        for i in range(len(grid)):
            if value(i) <= dgs_max:
                return float(grid[i]), seen[float(grid[i])], seen
    else:
        if value(0) <= dgs_max:
            return float(grid[0]), seen[float(grid[0])], seen
        last = len(grid) - 1
        if value(last) <= dgs_max:
            lo, hi = 0, last  # invariant: DGS(grid[lo]) > dgs_max >= DGS(grid[hi])
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if value(mid) <= dgs_max:
                    hi = mid
                else:
                    lo = mid
            return float(grid[hi]), seen[float(grid[hi])], seen
    best = min(seen, key=lambda f: (seen[f], f))
    raise ThresholdNotReachedError(float(dgs_max), float(grid[-1]), best, seen[best])


def search_rescaling_factor(
    alpha_bar: ArrayLike,
    dgs_max: float,
    vocab_size: int,
    dim: int,
    step: float = 0.5,
    max_factor: float = DEFAULT_MAX_FACTOR,
    bisection: bool = False,
    *,
    start: float = 1.0,
    variance_preserving: bool = False,
    num_timesteps: Optional[int] = DEFAULT_NUM_TIMESTEPS,
    max_positions: Optional[int] = DEFAULT_MAX_POSITIONS,
    estimator: Optional[DegenerationEstimator] = None,
    **estimator_kwargs,
) -> RescalingResult:
    """Algorithm 1: F = start, start + ΔF, ... until DGS(ᾱ', β̄') <= DGS_max (or bisection).

    Raises ``ValueError`` for dgs_max outside (0, 1) or V, d < 1, and
    :class:`ThresholdNotReachedError` when no F <= max_factor reaches the threshold.
    """
    _check_dgs_max(dgs_max)
    _check_sizes(vocab_size, dim)
    table = _as_alpha_table(alpha_bar)
    if estimator is None:
        estimator = get_estimator(vocab_size, dim, **estimator_kwargs)
    elif (estimator.vocab_size, estimator.dim) != (vocab_size, dim):
        raise ValueError("estimator was built for a different vocab_size/dim")
    curve = estimator.curve(
        table,
        variance_preserving=variance_preserving,
        num_timesteps=num_timesteps,
        max_positions=max_positions,
    )
    factor, dgs, seen = search_on_curve(
        curve, dgs_max, step=step, max_factor=max_factor, bisection=bisection, start=start
    )
    return RescalingResult(factor, dgs, float(dgs_max), curve.timesteps, curve.per_t(factor), seen)


def rescaling_table(
    schedules: Sequence[str],
    vocab_sizes: Sequence[int],
    thresholds: Sequence[float],
    *,
    dim: int = 128,
    steps: int = 2000,
    step: float = 0.5,
    max_factor: float = DEFAULT_MAX_FACTOR,
    bisection: bool = False,
    variance_preserving: bool = False,
    num_timesteps: Optional[int] = DEFAULT_NUM_TIMESTEPS,
    start: float = 1.0,
    progress: Optional[Callable[[int], None]] = None,
    **estimator_kwargs,
) -> Dict[Tuple[str, int, float], Optional[RescalingResult]]:
    """Table 19: {(schedule, V, DGS_max): result}; one estimator per V, one curve per schedule.

    A cell is None when F = ``start`` (1 by default) already satisfies the threshold, which is
    what the paper prints as '-' (no rescaling needed).
    """
    from .schedules import alphas_cumprod

    for th in thresholds:
        _check_dgs_max(th)
    out: Dict[Tuple[str, int, float], Optional[RescalingResult]] = {}
    for vocab in vocab_sizes:
        est = get_estimator(vocab, dim, progress=progress, **estimator_kwargs)
        for name in schedules:
            curve = est.curve(
                alphas_cumprod(name, steps),
                variance_preserving=variance_preserving,
                num_timesteps=num_timesteps,
            )
            for th in sorted(thresholds, reverse=True):  # larger thresholds need smaller F
                factor, dgs, seen = search_on_curve(
                    curve, th, step=step, max_factor=max_factor, bisection=bisection, start=start
                )
                out[(name, vocab, th)] = (
                    None
                    if factor == start
                    else RescalingResult(factor, dgs, th, curve.timesteps, curve.per_t(factor), dict(seen))
                )
    return out
