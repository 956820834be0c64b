"""`star segment IMAGE "QUERY"`: one query through the whole system; prints the reasoning, writes the
mask, an overlay and a result JSON (`--json`: one JSON object on stdout and nothing else there)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from ..honesty import MaskGuard


def _printer(n: int, quiet: bool):
    """Streams sample 0's tokens as they arrive (the whole story for N=1); for N>1 a counter."""
    state = {"done": 0}

    def on_event(event):
        if quiet:
            return
        if event.kind == "token" and event.sample == 0 and n == 1:
            sys.stdout.write(event.text)
            sys.stdout.flush()
        elif event.kind == "sample" and n > 1:
            state["done"] += 1
            sys.stderr.write(f"\rsamples finished: {state['done']}/{n}")
            if state["done"] == n:
                sys.stderr.write("\n")
            sys.stderr.flush()
    return on_event


def _summary(result) -> str:
    lines = []
    t = result.timings
    if len(result.samples) > 1:
        first = result.samples[0]
        lines.append(f"sample 0 thinks: {first.shown_reasoning}")
        statuses = {}
        for s in result.samples:
            statuses[s.status] = statuses.get(s.status, 0) + 1
        lines.append("samples: " + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items())))
        v = result.vote
        for c in v.clusters[:8]:
            mark = "*" if c.id in v.selected else " "
            lines.append(f" {mark} cluster {c.id}: {c.votes} votes ({c.ratio:.0%}), mean SAM score {c.mean_score:.3f}, "
                         f"label {c.label!r}")
        lines.append(f"vote: K={v.k}, {v.valid_runs} valid runs, {v.no_object_votes} no-object votes, "
                     f"{v.abstained} abstained" + (f" ({v.reason})" if v.reason else ""))
    else:
        s = result.samples[0]
        lines.append("")
        if s.reasoning_problem:  # the raw text streamed above is not an explanation of the answer
            lines.append(f"note: the text above is not readable reasoning ({s.reasoning_problem})")
        for j, tg in enumerate(s.targets):
            score = f", SAM score {s.scores[j]:.3f}" if j < len(s.scores) else ""
            lines.append(f"  {tg.label or 'object'}: box {list(tg.box)}, point {list(tg.point)}{score}")
        if s.status != "ok":
            lines.append(f"  answer: {s.status}" + (f" ({s.reason})" if s.reason else ""))
    lines.extend(f"note: {note}" for note in result.notes)
    area = int(result.mask.sum())
    h, w = result.mask.shape
    lines.append("final: no object" if result.no_object or not area else
                 f"final mask: {area} pixels ({100 * area / (h * w):.1f}% of {w}x{h})")
    lines.append(f"time: policy {t.vision_ms:.0f} ms vision + {t.prefill_ms:.0f} ms prefill + {t.decode_ms:.0f} ms decode ({t.decode_tokens} tokens, "
                 f"{t.decode_tokens_per_s:.0f}/s), SAM {t.sam_encode_ms:.0f} + {t.sam_decode_ms:.0f} ms, "
                 f"vote {t.vote_ms:.1f} ms ({t.vote_backend or 'none'}), total {t.total_ms:.0f} ms")
    return "\n".join(lines)


def main(args) -> int:
    from ..images import image_size, load_image
    from ..pipeline import check_query, load_reasoner, sampling_for
    from ..results import prepare_output_dir, result_to_dict, save_outputs

    # Everything a user can get wrong is checked before any model loads: the query, the output folder, the image.
    check_query(args.query)
    if args.out:
        prepare_output_dir(args.out)
    image = load_image(args.image, downscale=True)
    full = image_size(args.image)
    if (image.shape[1], image.shape[0]) != full:
        print(f"star: {args.image} is {full[0]}x{full[1]}, above the pixel limit: read at "
              f"{image.shape[1]}x{image.shape[0]} (the mask is at that size; --max-pixels reads it whole)",
              file=sys.stderr)
    reasoner = load_reasoner(args.bundle, device=args.device, threads=args.threads, max_samples=args.n,
                             max_new_tokens=args.max_new_tokens, verify=args.verify,
                             mask_guard=MaskGuard.of_args(args))
    try:
        result = reasoner.run(image, args.query, args.n,
                              sampling=sampling_for(args.n, seed=args.seed, max_new_tokens=args.max_new_tokens,
                                                    constrained=reasoner.grammar(args.grammar),
                                                    temperature=reasoner.temperature(args.temperature)),
                              on_event=_printer(args.n, args.json))
    finally:
        reasoner.close()
    payload = result_to_dict(result) if args.json or args.out else None
    paths = save_outputs(result, image, args.out, Path(args.image).stem, payload=payload) if args.out else {}
    if args.json:
        payload["files"] = {k: str(v) for k, v in paths.items()}  # where the set was written (paths, not hashes)
        print(json.dumps(payload))
        return 0
    print(_summary(result))
    for kind, path in paths.items():
        print(f"{kind}: {path}")
    return 0
