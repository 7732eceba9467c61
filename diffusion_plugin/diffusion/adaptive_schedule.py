"""SeqDiffuSeq's adaptive token-level noise schedule (§4.3, Algorithm 1, Eq. 7).

The schedule is a table ᾱ[t, i] (t = 0..T, target position i < P) initialised from a named
schedule.  Training records the per-token denoising loss L[s, i] = mean ‖ẑ_0^i − z_0^i‖²/d per
timestep bucket s = ⌊(t − 1) / K⌋ and position i.  Every U updates each position's column is refit
so that the loss grows linearly in t: with the bucket points (L[s, i], ᾱ_s^i = mean of ᾱ[t, i]
over the bucket) made monotone in s, M_i is the piecewise-linear map L → ᾱ through them (Eq. 7)
and ᾱ_new[t, i] = M_i(L_new[t]) for T losses L_new evenly spaced over the loss range (the paper
takes the smallest and largest bucket loss; here M_i's end segments are extended to the losses of
the current ᾱ[1, i] and ᾱ[T, i], so refits keep the noise range).  Then the statistics restart.

Difformer's noise rescaling is folded into the table (:meth:`AdaptiveNoiseSchedule.fold`, Eq. 8:
ᾱ' = ᾱ / (ᾱ + F²(1 − ᾱ)), i.e. SNR / F²), so the table is the training noise itself: the refit
sees the noise the losses were measured at, and a factor re-derived for a refit table (by the
model, from the degeneration score) does not compound with the previous one.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import List, Optional, Tuple

import torch
from torch import Tensor

from .schedules import NoiseSchedule, rescale
from .sync import all_reduce_sum

logger = logging.getLogger(__name__)


def bucket_index(timesteps: Tensor, bucket_size: int) -> Tensor:
    """s = ⌊(t − 1) / K⌋ for training timesteps t ∈ {1..T}."""
    return torch.div(timesteps - 1, bucket_size, rounding_mode="floor")


def bucket_means(table: Tensor, bucket_size: int) -> Tensor:
    """ᾱ_s = mean of ᾱ[t] over the t ∈ {1..T} of bucket s: [S, P] from [T + 1, P]."""
    steps = table.size(0) - 1
    buckets = bucket_index(torch.arange(1, steps + 1, device=table.device), bucket_size)
    sums = table.new_zeros((int(buckets[-1]) + 1, table.size(1))).index_add_(0, buckets, table[1:])
    sizes = torch.bincount(buckets).to(table.dtype)
    return sums / sizes.unsqueeze(1)


def interpolate(x: Tensor, xp: Tensor, fp: Tensor) -> Tensor:
    """Piecewise-linear f(x) through (xp_j, fp_j), xp strictly increasing, x within [xp_0, xp_-1]
    (Eq. 7: f(x) = fp_{j-1} + (fp_j − fp_{j-1}) (x − xp_{j-1}) / (xp_j − xp_{j-1}))."""
    right = torch.searchsorted(xp, x, right=True).clamp(1, xp.numel() - 1)
    x0, x1, f0, f1 = xp[right - 1], xp[right], fp[right - 1], fp[right]
    return f0 + (f1 - f0) * ((x - x0) / (x1 - x0)).clamp(0.0, 1.0)


def refit_column(alpha_bar: Tensor, bucket_alpha: Tensor, bucket_loss: Tensor) -> Optional[Tensor]:
    """One position's new ᾱ[0..T] from its observed bucket points (L_s, ᾱ_s), or None if they
    do not give two distinct loss levels with decreasing ᾱ.

    The losses are made monotone in s by a running maximum; buckets whose losses then tie become
    one point at their mean ᾱ, so M (Eq. 7) is a function of L.  The first and last segments of M
    are extended to the current end points ᾱ[1] and ᾱ[T] (bucket means lie inside them), so the
    new losses span [M⁻¹(ᾱ[1]), M⁻¹(ᾱ[T])] and a refit keeps the schedule's noise range instead
    of shrinking it by half a bucket at each end.
    """
    loss = torch.cummax(bucket_loss, dim=0).values
    levels, inverse, sizes = torch.unique_consecutive(loss, return_inverse=True, return_counts=True)
    if levels.numel() < 2:
        return None
    alpha = levels.new_zeros(levels.numel()).index_add_(0, inverse, bucket_alpha) / sizes.to(levels.dtype)
    if bool((alpha[1:] >= alpha[:-1]).any()):
        return None
    first, last = alpha_bar[1:2], alpha_bar[-1:]
    if bool(first > alpha[0]):  # extend the first segment (dL/dᾱ < 0) up to ᾱ[1]
        slope = (levels[1] - levels[0]) / (alpha[1] - alpha[0])
        levels, alpha = torch.cat([levels[:1] + (first - alpha[0]) * slope, levels]), torch.cat([first, alpha])
    if bool(last < alpha[-1]):  # and the last one down to ᾱ[T]
        slope = (levels[-1] - levels[-2]) / (alpha[-1] - alpha[-2])
        levels, alpha = torch.cat([levels, levels[-1:] + (last - alpha[-1]) * slope]), torch.cat([alpha, last])
    steps = alpha_bar.numel() - 1
    new_loss = torch.linspace(float(levels[0]), float(levels[-1]), steps, dtype=levels.dtype)
    return torch.cat([alpha_bar[:1], interpolate(new_loss.to(levels.device), levels, alpha)])


@dataclass
class RefitReport:
    """What a refit did: positions refit, positions kept for lack of data, buckets left out."""

    refit: List[int] = field(default_factory=list)
    kept: List[int] = field(default_factory=list)
    sparse_buckets: int = 0

    def describe(self, min_observations: int) -> str:
        text = f"refit {len(self.refit)} positions"
        if self.sparse_buckets:
            text += (
                f"; {self.sparse_buckets} (bucket, position) cells with fewer than "
                f"{min_observations} token losses left out of the fit"
            )
        if self.kept:
            text += (
                f"; positions {compact_ranges(self.kept)} kept their schedule (fewer than two "
                "observed buckets with distinct losses)"
            )
        return text


def compact_ranges(values: List[int]) -> str:
    """[0, 1, 2, 5] → '0-2,5'."""
    parts: List[str] = []
    start = previous = values[0]
    for value in values[1:] + [None]:  # type: ignore[list-item]
        if value is None or value != previous + 1:
            parts.append(str(start) if start == previous else f"{start}-{previous}")
            start = value
        previous = value
    return ",".join(parts)


def refit_table(
    table: Tensor, loss_sum: Tensor, loss_count: Tensor, bucket_size: int, min_observations: int
) -> Tuple[Tensor, RefitReport]:
    """Algorithm 1 for every position: the new [T + 1, P] table and a report.

    Cells (s, i) with fewer than ``min_observations`` token losses are left out of position i's
    fit; a position with fewer than two usable buckets keeps its column, so the result never has
    NaN and every column stays decreasing in t within (0, 1].
    """
    bucket_alpha = bucket_means(table, bucket_size)
    observed = loss_count >= min_observations
    mean_loss = loss_sum / loss_count.clamp(min=1)
    new_table = table.clone()
    report = RefitReport()
    for position in range(table.size(1)):
        usable = observed[:, position]
        report.sparse_buckets += int((~usable & (loss_count[:, position] > 0)).sum())
        column = None
        if int(usable.sum()) >= 2:
            column = refit_column(
                table[:, position], bucket_alpha[usable, position], mean_loss[usable, position]
            )
        if column is None:
            report.kept.append(position)
        else:
            new_table[:, position] = column
            report.refit.append(position)
    return new_table, report


class AdaptiveNoiseSchedule(NoiseSchedule):
    """Per-position ᾱ[t, i] table plus its loss recorder; all of it is saved state.

    Buffers: ``alpha_bar_table`` [T + 1, P]; ``loss_sum``/``loss_count`` [S, P] since the last
    refit; ``fit_loss_sum``/``fit_loss_count`` the statistics the last refit used (for plots);
    ``last_refit`` the update of the last refit; ``rescaling_factor`` the F last folded into the
    table (1: none since the last refit).  Losses of a training update are held in
    ``pending`` (not saved) until :meth:`end_update` adds them, summed over workers.
    """

    def __init__(
        self,
        name: str,
        steps: int,
        positions: int,
        bucket_size: int,
        update_interval: int,
        warmup_updates: int = 0,
        min_observations: int = 1,
    ) -> None:
        if positions < 1:
            raise ValueError(f"--adaptive-positions must be >= 1, got {positions}")
        if not 1 <= bucket_size <= steps:
            raise ValueError(
                f"--adaptive-bucket-size must be in [1, --diffusion-steps={steps}], got {bucket_size}"
            )
        if update_interval < 1:
            raise ValueError(f"--adaptive-update-interval must be >= 1, got {update_interval}")
        if warmup_updates < 0:
            raise ValueError(f"--adaptive-warmup-updates must be >= 0, got {warmup_updates}")
        if min_observations < 1:
            raise ValueError(f"--adaptive-min-observations must be >= 1, got {min_observations}")
        super().__init__(name, steps)
        self.register_buffer("alpha_bar_table", self.alpha_bar_table.repeat(1, positions))
        buckets = (steps + bucket_size - 1) // bucket_size
        stats = torch.zeros(buckets, positions, dtype=torch.float64)
        for buffer in ("loss_sum", "loss_count", "fit_loss_sum", "fit_loss_count"):
            self.register_buffer(buffer, stats.clone())
        self.register_buffer("pending", torch.zeros(2, buckets, positions, dtype=torch.float64), persistent=False)
        self.register_buffer("last_refit", torch.tensor(0))
        self.register_buffer("rescaling_factor", torch.tensor(1.0, dtype=torch.float64))
        self.bucket_size = bucket_size
        self.update_interval = update_interval
        self.warmup_updates = warmup_updates
        self.min_observations = min_observations
        self.num_updates = 0
        self.warned_long_target = False

    @property
    def positions(self) -> int:
        return self.alpha_bar_table.size(1)

    @torch.no_grad()
    def fold(self, factor: float) -> None:
        """Fold noise rescaling into the table (Difformer Eq. 8): ᾱ ← ᾱ / (ᾱ + F²(1 − ᾱ)), which
        divides every SNR ᾱ/(1 − ᾱ) by F² and keeps ᾱ_0 = 1; ``rescaling_factor`` records F."""
        self.alpha_bar_table.copy_(rescale(self.alpha_bar_table, factor, variance_preserving=True)[0])
        self.rescaling_factor.fill_(factor)

    def set_num_updates(self, num_updates: int) -> None:
        """Updates done so far (losses are recorded once ``num_updates >= warmup``)."""
        self.num_updates = num_updates

    @torch.no_grad()
    def record(self, timesteps: Tensor, token_loss: Tensor, mask: Tensor) -> None:
        """Add the per-token losses [B, L] of non-pad tokens (``mask``) at timesteps [B] to the
        pending sums; positions >= P are counted in the last column, which they also use."""
        if self.num_updates < self.warmup_updates:
            return
        length = token_loss.size(1)
        if length > self.positions and not self.warned_long_target:
            logger.warning(
                "target of %d positions is longer than the adaptive schedule's %d "
                "(--adaptive-positions): positions >= %d share the last column and its statistics",
                length, self.positions, self.positions - 1,
            )
            self.warned_long_target = True
        positions = torch.arange(length, device=mask.device).clamp(max=self.positions - 1)
        cells = bucket_index(timesteps, self.bucket_size).unsqueeze(1) * self.positions + positions
        cells = cells[mask]
        self.pending[0].view(-1).index_add_(0, cells, token_loss[mask].to(self.pending.dtype))
        self.pending[1].view(-1).index_add_(0, cells, torch.ones_like(cells, dtype=self.pending.dtype))

    @torch.no_grad()
    def end_update(self, num_updates: int) -> Optional[RefitReport]:
        """After update ``num_updates`` on every worker: add the pending losses summed over workers,
        then refit if the update is due (W + U, W + 2U, …); returns the refit's report."""
        self.num_updates = num_updates
        pending = all_reduce_sum(self.pending)
        self.loss_sum += pending[0]
        self.loss_count += pending[1]
        self.pending.zero_()
        due = num_updates > self.warmup_updates and (num_updates - self.warmup_updates) % self.update_interval == 0
        if not due or num_updates <= int(self.last_refit):
            return None
        return self.refit(num_updates)

    def refit(self, num_updates: int) -> RefitReport:
        """Algorithm 1 on the recorded statistics, which then restart."""
        table, report = refit_table(
            self.alpha_bar_table, self.loss_sum, self.loss_count, self.bucket_size, self.min_observations
        )
        self.alpha_bar_table.copy_(table)
        self.fit_loss_sum.copy_(self.loss_sum)
        self.fit_loss_count.copy_(self.loss_count)
        self.loss_sum.zero_()
        self.loss_count.zero_()
        self.last_refit.fill_(num_updates)
        self.rescaling_factor.fill_(1.0)
        logger.info(
            "adaptive schedule at update %d (%d token losses): %s",
            num_updates, int(self.fit_loss_count.sum()), report.describe(self.min_observations),
        )
        return report
