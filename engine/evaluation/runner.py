"""The eval loop: every item of a reader through a Reasoner, scored as it finishes, appended to the run
log; resumable, cancellable between and within items, with a progress bar showing running gIoU/cIoU."""

from __future__ import annotations

import zlib
from dataclasses import asdict, dataclass, field

from ..errors import DatasetError, StarError
from ..honesty import MaskGuard
from ..metrics import IoUAccumulator, PreparedGt, pick_counts
from ..pipeline import LocalReasoner, sampling_for
from ..policy.types import DEFAULT_MAX_NEW_TOKENS, CancelToken
from ..rle import encode
from ..voting import VoteConfig, grid_configs
from .report import GROUP_KEYS, failure_union
from .runlog import RunLog
from .scoring import score_result


@dataclass
class EvalSettings:
    data: str                      # KIND:PATH, as given
    data_options: dict = field(default_factory=dict)  # the reader's options (--data-option): they change the data
    on_error: str = "raise"        # a broken item: "raise" stops the run, "skip" records it as a failure
    n: int = 1
    seed: int = 0
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    constrained: bool = False      # decode under the answer grammar (llama.cpp)
    temperature: float = 1.0       # the voting samples' (N > 1; StAR's 1.0)
    vote: VoteConfig = field(default_factory=VoteConfig)
    sweep: bool = True             # StAR's threshold grid on the N completions (N > 1 only)
    limit: int | None = None       # the first `limit` items only
    convention: str = "lisa"       # for the progress bar; the report can use any

    def describe(self, bundle: dict, mask_guard: MaskGuard = MaskGuard()) -> dict:
        """What run.json records; PREDICTION_KEYS of it must match on resume. mask_guard: the reasoner's
        (which masks count as nothing found changes the answers)."""
        sweep = [asdict(c) for c in grid_configs()] if self.sweep and self.n > 1 else []
        policy = (bundle or {}).get("policy") or {}
        # N = 1 is greedy: the temperature decides nothing there, so it is recorded as StAR's 1.0 (older N = 1
        # runs resume whatever voting temperature a bundle recommends)
        temperature = self.temperature if self.n > 1 else 1.0
        return {"data": self.data, "data_options": dict(sorted(self.data_options.items())),
                "on_error": self.on_error, "n": self.n, "seed": self.seed, "max_new_tokens": self.max_new_tokens,
                "constrained": self.constrained, "temperature": temperature, "vote": asdict(self.vote), "sweep": sweep,
                "policy_sha256": policy.get("sha256"),
                "segmenter_sha256": ((bundle or {}).get("segmenter") or {}).get("sha256"),
                "mask_guard": asdict(mask_guard), "bundle": bundle}


@dataclass
class EvalOutcome:
    records: list[dict]
    total: int                     # items the run covers (after --limit)
    new: int                       # finished in this call
    interrupted: bool


def item_seed(seed: int, item_id: str) -> int:
    """A per-item seed that does not depend on order, so a resumed run samples what an unbroken one would."""
    return zlib.crc32(f"{seed}:{item_id}".encode()) & 0x7FFFFFFF


def _groups(sample) -> dict:
    return {k: sample.meta[k] for k in GROUP_KEYS if sample.meta.get(k) is not None}


def _load_item(sample):
    """The item's image and prepared ground truth; a ground truth of another size than its image is the
    dataset's error, caught before any model time is spent on it."""
    image = sample.load_image()
    gt = sample.load_gt()
    if getattr(gt, "shape", None) is None or tuple(gt.shape[:2]) != tuple(image.shape[:2]) or gt.ndim != 2:
        raise DatasetError(f"its ground truth is {getattr(gt, 'shape', type(gt).__name__)}, the image "
                           f"{image.shape[1]}x{image.shape[0]}: they must be the same size")
    return image, PreparedGt(gt)


def _record(sample, result, scores: dict) -> dict:
    groups = _groups(sample)
    return {"id": sample.id, "query": sample.query, "groups": groups, **scores,
            "no_object": bool(result.no_object), "pred": encode(result.mask),
            "samples": [{"status": s.status, "finish_reason": s.finish_reason, "text": s.text} for s in result.samples],
            "timings": asdict(result.timings)}


def _evaluate(reasoner: LocalReasoner, sample, settings: EvalSettings, sweep_configs, cancel: CancelToken) -> dict | None:
    """One item's record: scored, or an error record (a failure: the report counts it as IoU 0); None
    when cancelled mid-item. A broken item under on_error="raise" stops the run (DatasetError)."""
    try:
        image, gt = _load_item(sample)
    except (StarError, OSError, ValueError, KeyError, TypeError, OverflowError) as exc:  # the item's data is bad
        if settings.on_error == "raise":
            raise DatasetError(f"item {sample.id}: {exc} (stopped; --on-error skip records such an item as a "
                               "failure and goes on)") from None
        return {"id": sample.id, "query": sample.query, "error": str(exc), "stage": "data", "groups": _groups(sample)}
    try:
        result = reasoner.run(image, sample.query, settings.n,
                              sampling=sampling_for(settings.n, seed=item_seed(settings.seed, sample.id),
                                                    max_new_tokens=settings.max_new_tokens,
                                                    constrained=settings.constrained, temperature=settings.temperature),
                              cancel=cancel)
    except StarError as exc:  # the system could not answer: a failure, scored as one (its GT area counts)
        return {"id": sample.id, "query": sample.query, "error": str(exc), "stage": "model", "groups": _groups(sample),
                "failure_counts": list(gt.counts(None))}
    if result.cancelled or cancel.cancelled:
        return None
    return _record(sample, result, score_result(result, gt, vote=settings.vote, sweep_configs=sweep_configs))


def run_eval(reasoner: LocalReasoner, reader, out_dir, settings: EvalSettings, *, cancel: CancelToken | None = None,
             progress: bool = True) -> EvalOutcome:
    from tqdm import tqdm

    cancel = cancel or CancelToken()
    log = RunLog(out_dir)
    run_settings = settings.describe(reasoner.bundle, reasoner.mask_guard)
    records = log.open(run_settings)
    done = {r["id"] for r in records if "error" not in r}
    records = [r for r in records if "error" not in r]  # errored items are tried again
    sweep_configs = grid_configs() if run_settings["sweep"] else None
    total = len(reader) if settings.limit is None else min(settings.limit, len(reader))

    acc = IoUAccumulator(settings.convention)
    for r in records:
        acc.add_counts(*pick_counts(r["counts"], settings.convention))
    bar = tqdm(total=total, initial=min(len(done), total), desc="eval", unit="item", disable=not progress,
               dynamic_ncols=True)
    new, interrupted = 0, False
    try:
        for index, sample in enumerate(reader):
            if index >= total:
                break
            if sample.id in done:
                continue
            if cancel.cancelled:
                interrupted = True
                break
            record = _evaluate(reasoner, sample, settings, sweep_configs, cancel)
            if record is None:
                interrupted = True  # a half-decoded item is not a result: it runs again on resume
                break
            log.append(record)
            done.add(sample.id)
            records.append(record)
            new += 1
            if "error" in record:
                acc.add_failure(failure_union(record, settings.convention))
            else:
                acc.add_counts(*pick_counts(record["counts"], settings.convention))
            scores = acc.result()
            if scores["n"]:
                bar.set_postfix(gIoU=f"{100 * scores['giou']:.1f}", cIoU=f"{100 * scores['ciou']:.1f}")
            bar.update(1)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        bar.close()
    return EvalOutcome(records, total, new, interrupted)
