"""What one evaluated item contributes to the report, computed while its masks are still in memory.

Every prediction is stored as four integers (PreparedGt.counts: I and U with ignore pixels excluded,
then with them folded into the object), so a finished run can be reported under any metric
convention without touching the model or the ground truth again. With N samples per item the same
completions also give:
- scaling: the final mask for N' = 1, 2, 4, ... < N, from disjoint blocks of the N samples (samples are
  independent draws, so each block is an honest N'-sample run; every block is kept, and the report
  averages them, which lowers the variance of small-N' points);
- sweep: StAR's threshold grid re-voted on all N samples (IoUs computed once).
"""

from __future__ import annotations

from ..metrics import PreparedGt
from ..pipeline import Result, decide, vote_candidates
from ..voting import VoteConfig, sweep


def scaling_sizes(n: int) -> list[int]:
    """1, 2, 4, ... below n (n itself is the main prediction)."""
    sizes, k = [], 1
    while k < n:
        sizes.append(k)
        k *= 2
    return sizes


def score_result(result: Result, gt: PreparedGt, *, vote: VoteConfig, sweep_configs: list[VoteConfig] | None) -> dict:
    """{"counts": [4], "scaling": {N': [[4] per block]}, "sweep": [[4] per config]} for one item."""
    out: dict = {"counts": list(gt.counts(result.mask))}
    samples, n = result.samples, len(result.samples)
    shape = result.mask.shape
    row_scores = result.object_scores()
    if n > 1:
        out["scaling"] = {}
        for size in scaling_sizes(n):
            blocks = [samples[i:i + size] for i in range(0, n - size + 1, size)]
            out["scaling"][str(size)] = [
                list(gt.counts(decide(block, result.object_masks, row_scores, shape, vote)[0])) for block in blocks]
        if sweep_configs:
            candidates = vote_candidates(samples, result.object_masks, row_scores)
            out["sweep"] = [list(c) for _, c in sweep(candidates, sweep_configs, shape=shape,
                                                      reduce=lambda r: gt.counts(r.mask))]
    return out
