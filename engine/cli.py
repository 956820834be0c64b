"""The `star` command line. Subcommands import their heavy modules only when they run."""

from __future__ import annotations

import argparse
import os
import sys

from . import __version__
from .argtypes import bounded_int, fraction, grey_levels, int_list, megapixels, memory_size, positive_float, temperature
from .errors import run_command
from .honesty import DEFAULT_MAX_MASK_SHARE, DEFAULT_MIN_MASK_CONTRAST
from .policy.types import (  # plain constants: the CLI stays light to start
    DEFAULT_MAX_NEW_TOKENS,
    MAX_NEW_TOKENS,
    MAX_SAMPLES,
)


def _runs(p, module: str) -> None:
    """The subcommand runs `module.main(args)`, imported only when chosen (start-up stays light)."""
    p.set_defaults(run=lambda a: __import__(module, fromlist=["main"]).main(a))


def _bundle_arg(p) -> None:
    p.add_argument("--bundle", default=None, help="model bundle folder (default: the bundled nano model)")
    p.add_argument("--verify", default="quick", choices=["quick", "full"],
                   help="bundle check before loading: quick trusts remembered hashes of unchanged files "
                        "(inode, size, mtime, ctime); full re-hashes every file (default quick)")


def _repeat_arg(p, default: int) -> None:
    p.add_argument("--repeat", type=bounded_int(1, 1000, "timed repetitions"), default=default)


def _samples_arg(p, help: str) -> None:
    p.add_argument("-n", "--samples", dest="n", type=bounded_int(1, MAX_SAMPLES, "llama.cpp's parallel sequences"),
                   default=1, help=help)


def _decode_args(p) -> None:
    p.add_argument("--max-new-tokens", type=bounded_int(1, MAX_NEW_TOKENS, "answers take a few hundred"),
                   default=DEFAULT_MAX_NEW_TOKENS)
    p.add_argument("--max-pixels", type=megapixels, default=None, metavar="MP",
                   help="largest image to read, in megapixels (default 64), checked before decoding")
    p.add_argument("--max-mask-share", type=fraction, default=DEFAULT_MAX_MASK_SHARE, metavar="F",
                   help="a mask covering this share of the image or more is taken as nothing found, not as the "
                        f"object (default {DEFAULT_MAX_MASK_SHARE}; 1 keeps every mask)")
    p.add_argument("--min-mask-contrast", type=grey_levels, default=DEFAULT_MIN_MASK_CONTRAST, metavar="L",
                   help="a mask whose surroundings span fewer grey levels than this (a blank canvas, an empty "
                        f"wall) is taken as nothing found (default {DEFAULT_MIN_MASK_CONTRAST:g}; 0 keeps every mask)")


def _device_arg(p) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])


def _bench_voting(sub) -> None:
    p = sub.add_parser("voting", help="IoU matrix and whole vote: ours vs pycocotools vs a float matmul (and the CUDA kernel)")
    p.add_argument("--sizes", type=int_list(8, 8192, "mask side lengths"), default="1024,2048",
                   help="mask side lengths (default 1024,2048)")
    p.add_argument("--counts", type=int_list(1, 1024, "masks per vote"), default="8,32,64",
                   help="numbers of sampled masks N (default 8,32,64)")
    _repeat_arg(p, 5)
    p.add_argument("--json", default="runs/bench/voting.json", help="where to write the results")
    _runs(p, "engine.bench.voting")


def _bench_segment(sub) -> None:
    p = sub.add_parser("segment", help="SAM 2: encoder latency, decoder batched vs one prompt per call, per backend")
    p.add_argument("--models", default="shrunk,tiny", help="shrunk, tiny, small, large (random weights; default shrunk,tiny)")
    p.add_argument("--backends", default="torch,onnx", help="torch, onnx (default both)")
    p.add_argument("--prompts", type=int_list(1, 4096, "prompts per call"), default="32,128",
                   help="prompt counts per decoder call (default 32,128)")
    _device_arg(p)
    _repeat_arg(p, 5)
    p.add_argument("--json", default="runs/bench/segment.json", help="where to write the results")
    _runs(p, "engine.bench.segment")


def _bench_policy(sub) -> None:
    p = sub.add_parser("policy", help="llama.cpp policy: prefill, N samples decoded together vs N one-sample runs")
    _bundle_arg(p)
    p.add_argument("--counts", type=int_list(1, MAX_SAMPLES, "llama.cpp's parallel sequences"), default="1,2,4,8,16,32",
                   help="numbers of samples N (default 1,2,4,8,16,32)")
    p.add_argument("--tokens", type=bounded_int(1, MAX_NEW_TOKENS, "tokens per sample"), default=128,
                   help="tokens decoded per sample (stops ignored; default 128)")
    _device_arg(p)
    _repeat_arg(p, 3)
    p.add_argument("--json", default="runs/bench/policy.json", help="where to write the results")
    _runs(p, "engine.bench.policy")


def _bench_pipeline(sub) -> None:
    p = sub.add_parser("pipeline", help="one query end to end, per stage, for N = 1, 8, 32 on the sample scene")
    _bundle_arg(p)
    p.add_argument("--counts", type=int_list(1, MAX_SAMPLES, "llama.cpp's parallel sequences"), default="1,8,32",
                   help="numbers of samples N (default 1,8,32)")
    p.add_argument("--query", default=None, help="query (default: the sample scene's)")
    p.add_argument("--max-new-tokens", type=bounded_int(1, MAX_NEW_TOKENS, "answers take a few hundred"), default=DEFAULT_MAX_NEW_TOKENS)
    _device_arg(p)
    _repeat_arg(p, 3)
    p.add_argument("--json", default="runs/bench/pipeline.json", help="where to write the results")
    _runs(p, "engine.bench.pipeline")


def _bench_track(sub) -> None:
    p = sub.add_parser("track", help="SAM 2's video memory through a generated clip: frames per second and memory, "
                                     "vs sam2's own init_state decoding the whole clip first")
    p.add_argument("--models", default="shrunk,tiny", help="shrunk, tiny, small, large (random weights; default shrunk,tiny)")
    p.add_argument("--frames", type=int_list(2, 100000, "frames"), default="300",
                   help="frames tracked: one count, or one per model (default 300)")
    p.add_argument("--width", type=bounded_int(16, 8192, "pixels"), default=1280)
    p.add_argument("--height", type=bounded_int(16, 8192, "pixels"), default=720)
    p.add_argument("--no-init-state", dest="init_state", action="store_false",
                   help="skip the alternative (sam2's init_state on the same frames)")
    _device_arg(p)
    p.add_argument("--json", default="runs/bench/track.json", help="where to write the results")
    _runs(p, "engine.bench.track")


def _bench_serve(sub) -> None:
    p = sub.add_parser("serve", help="star serve under 1, 4, 16 concurrent clients vs the same requests in-process")
    p.add_argument("--bundle", default=None, help="model bundle folder (default: the bundled nano model)")
    p.add_argument("--concurrency", type=int_list(1, 256, "concurrent clients"), default="1,4,16",
                   help="numbers of concurrent clients (default 1,4,16)")
    p.add_argument("--requests", type=bounded_int(1, 100000, "requests per row"), default=32)
    _samples_arg(p, "samples per request (default 1)")
    _device_arg(p)
    p.add_argument("--json", default="runs/bench/serve.json", help="where to write the results")
    _runs(p, "engine.bench.serve")


def _bench_all(sub) -> None:
    p = sub.add_parser("all", help="every benchmark with its defaults (policy and pipeline need a bundle)")
    _bundle_arg(p)
    _device_arg(p)
    p.add_argument("--quick", action="store_true", help="small sizes and one repeat (a smoke run)")
    p.add_argument("--json-dir", default="runs/bench", help="folder for the JSON files")
    _runs(p, "engine.bench.all")


def _segment(sub) -> None:
    p = sub.add_parser("segment", help="find what a query describes in an image: reasoning, mask, overlay, JSON")
    p.add_argument("image")
    p.add_argument("query")
    _bundle_arg(p)
    _samples_arg(p, "samples; 1 = StAR's greedy direct prediction, >1 = sampling + majority vote (StAR: 32)")
    p.add_argument("--out", default="star-out", help="folder for the mask / overlay PNGs and result JSON ('' = none)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout and nothing else there")
    _answer_args(p)
    _runs(p, "engine.commands.segment")


def _track(sub) -> None:
    p = sub.add_parser("track", help="reason on a key frame, follow the answer through a video with SAM 2's memory")
    p.add_argument("video", help="a video file or a folder of frames (natural name order)")
    p.add_argument("query")
    _bundle_arg(p)
    p.add_argument("--sam2", default=None, metavar="CONFIG.yaml:CHECKPOINT.pt",
                   help="the SAM 2 to track with (default: the bundle's PyTorch segmenter)")
    p.add_argument("--key-frame", type=bounded_int(0, 10**7, "a frame position"), default=0,
                   help="the frame the policy answers on (position after --stride)")
    _samples_arg(p, "samples on the key frame (and at each re-ask); >1 = the vote, as star segment")
    p.add_argument("--reask", action=argparse.BooleanOptionalAction, default=True,
                   help="ask the policy again where a track is lost (default on)")
    p.add_argument("--stride", type=bounded_int(1, 10**4, "a frame step"), default=1)
    p.add_argument("--max-frames", type=bounded_int(1, 10**7, "a frame count"), default=None)
    p.add_argument("--out", default="star-track", help="folder for masks/, track.json, overlay.mp4")
    p.add_argument("--format", choices=["masks", "labelme"], default="masks",
                   help="labelme: a labelme file per frame as well")
    p.add_argument("--overlay", action=argparse.BooleanOptionalAction, default=True, help="write overlay.mp4")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _answer_args(p)
    _runs(p, "engine.commands.track")


def _answer_args(p) -> None:
    """How the policy answers: device, seed, decoding limits, grammar, temperature (segment and track)."""
    _device_arg(p)
    p.add_argument("--seed", type=int, default=0)
    _decode_args(p)
    _grammar_arg(p)
    _temperature_arg(p)


def _grammar_arg(p) -> None:
    p.add_argument("--grammar", action=argparse.BooleanOptionalAction, default=None,
                   help="decode under the answer grammar, so every finished answer parses (llama.cpp policies); "
                        "default: what the bundle's manifest recommends (policy.answer_grammar)")


def _temperature_arg(p) -> None:
    p.add_argument("--temperature", type=temperature, default=None,
                   help="sampling temperature of the N > 1 voting samples (N = 1 is greedy); default: the bundle's "
                        "policy.vote_temperature, StAR's 1.0 where the manifest does not say")


def _eval(sub) -> None:
    from .metrics import CONVENTIONS

    p = sub.add_parser("eval", help="a benchmark through the reasoner: resumable, per-group metrics, scaling and sweep from one run")
    p.add_argument("--data", required=True, help="KIND:PATH, KIND one of reasonseg, reasonseg-x, reasonseg-r, hf, refcoco, cod, mmr, labelme, coco; revos, mevis (video: star track per expression, J&F)")
    _bundle_arg(p)
    _samples_arg(p, "samples per item; 1 = greedy direct prediction, >1 = vote, plus N' = 1, 2, 4... from the same run")
    p.add_argument("--out", default=None, help="run folder (default runs/eval/<data>-<bundle>-n<N>); re-running resumes it")
    p.add_argument("--convention", default="lisa", choices=sorted(CONVENTIONS), help="metric convention (docs/protocol.md §9)")
    p.add_argument("--limit", type=bounded_int(1, 10**9, "items"), default=None, help="only the first LIMIT items")
    p.add_argument("--seed", type=int, default=0)
    _decode_args(p)
    _grammar_arg(p)
    _temperature_arg(p)
    p.add_argument("--vote-mode", default="best", choices=["best", "consensus"])
    p.add_argument("--no-sweep", action="store_true", help="skip StAR's threshold sweep (N > 1)")
    p.add_argument("--on-error", default="raise", choices=["raise", "skip"],
                   help="a broken item (unreadable image or ground truth): stop, or record it as a failure and go on")
    p.add_argument("--exclude-failures", action="store_true",
                   help="leave failed items out of the metrics (default: each counts as IoU 0; the report lists them)")
    p.add_argument("--data-option", action="append", default=[], metavar="KEY=VALUE",
                   help="reader option, e.g. split=testA, dataset=refcoco+, image_dir=...")
    p.add_argument("--trust-pickle", action="store_true", help="RefCOCO: allow loading refs(*).p pickles (only files you trust)")
    p.add_argument("--report-only", action="store_true", help="re-write the report of the run in --out (e.g. another --convention)")
    _device_arg(p)
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--sam2", default=None, metavar="CONFIG.yaml:CHECKPOINT.pt",
                   help="revos: / mevis: data: the SAM 2 to track with (default: the bundle's PyTorch segmenter)")
    p.add_argument("--tracker", default="memory", choices=["memory", "still", "box", "policy"],
                   help="revos: / mevis: data: SAM 2's memory (default), or a baseline: the key frame's mask on every "
                        "frame (still), SAM on every frame from the key frame's box (box), the policy on every frame")
    p.add_argument("--key-answer", default="policy", choices=["policy", "gold"],
                   help="revos: / mevis: data: who answers on the key frame: the policy (default) or, to measure the "
                        "tracker alone, the target's own box and deepest point (gold; no policy call)")
    _runs(p, "engine.commands.eval")


def _serve(sub) -> None:
    p = sub.add_parser("serve", help="serve bundles over HTTP in X-AnyLabeling-Server's protocol (docs/serve.md)")
    p.add_argument("--bundle", action="append", default=[], metavar="[ID=]DIR",
                   help="a bundle to serve, as model ID (default: its manifest name); repeat for several "
                        "(default: the bundled nano model)")
    p.add_argument("--verify", default="quick", choices=["quick", "full"], help="bundle check before loading")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default loopback; another address "
                                                      "needs --api-key-file)")
    p.add_argument("--port", type=bounded_int(1, 65535, "a TCP port"), default=8000)
    p.add_argument("--api-key-file", default=None, metavar="FILE",
                   help="a file holding the API key clients must send in the Token header (/health stays open)")
    p.add_argument("--queue", type=bounded_int(1, 1024, "requests waiting per model"), default=8,
                   help="requests that may wait per model; more get 503 QUEUE_FULL (default 8)")
    p.add_argument("--timeout", type=positive_float, default=300.0, metavar="SECONDS",
                   help="per-request time limit once it runs; also the shutdown grace (default 300)")
    p.add_argument("--max-samples", type=bounded_int(1, MAX_SAMPLES, "llama.cpp's parallel sequences"), default=32,
                   help="the largest n a request may ask for (sizes the KV cache; default 32)")
    p.add_argument("--max-body-mb", type=positive_float, default=64.0, help="largest request body in MB (default 64)")
    _decode_args(p)
    _device_arg(p)
    _runs(p, "engine.commands.serve")


def _label(sub) -> None:
    p = sub.add_parser("label", help="label a folder of images with one query: labelme JSON beside each image, "
                                     "or one COCO file (resumable)")
    p.add_argument("folder", help="folder of images (searched recursively)")
    p.add_argument("query", help="what to segment, e.g. \"the thing that keeps food cold\"")
    p.add_argument("--format", default="labelme", choices=["labelme", "coco"])
    p.add_argument("--coco-file", default=None, help="with --format coco: the output file (default FOLDER/star-coco.json)")
    _samples_arg(p, "samples per image voted together (default 1)")
    p.add_argument("--seed", type=bounded_int(0, 2**31 - 1, "a 31-bit seed"), default=0)
    p.add_argument("--server", default=None, metavar="URL", help="use a `star serve` server instead of a local bundle")
    p.add_argument("--model", default=None, help="with --server: the model ID (default: the server's only model)")
    p.add_argument("--api-key-file", default=None, metavar="FILE", help="with --server: the API key")
    _bundle_arg(p)
    p.add_argument("--overwrite", action="store_true", help="label images that already have an annotation (the "
                   "file there is first copied to FILE.bak, once: a later run keeps that copy)")
    p.add_argument("--boxes", action="store_true", help="also write the answer's boxes as rectangles")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    _decode_args(p)
    _device_arg(p)
    _runs(p, "engine.commands.label")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="star", description="StAR Desktop: local reasoning segmentation.")
    parser.add_argument("--version", action="version", version=f"star {__version__}")
    parser.add_argument("--threads", type=bounded_int(1, 1024, "CPU threads"), default=None, help="CPU threads for numpy/BLAS/torch (default: 1 for bench, all otherwise)")
    sub = parser.add_subparsers(dest="command", required=True)

    _segment(sub)
    _track(sub)
    _eval(sub)
    _serve(sub)
    _label(sub)

    bench = sub.add_parser("bench", help="benchmarks: print a table, write JSON")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    _bench_voting(bench_sub)
    _bench_segment(bench_sub)
    _bench_policy(bench_sub)
    _bench_pipeline(bench_sub)
    _bench_track(bench_sub)
    _bench_serve(bench_sub)
    _bench_all(bench_sub)

    doctor = sub.add_parser("doctor", help="what this machine offers (GPU, CUDA, runtimes), and whether a bundle is intact")
    doctor.add_argument("--json", action="store_true", help="print one JSON object")
    doctor.add_argument("--bundle", default=None, help="also check that this bundle is complete and intact, and "
                                                      "whether it fits this machine's memory at N samples")
    doctor.add_argument("--gpu-mem", type=memory_size, default=None, metavar="SIZE",
                        help="with --bundle: also answer for a GPU of this memory (e.g. 24G)")
    doctor.add_argument("--samples", type=int_list(1, MAX_SAMPLES, "llama.cpp's parallel sequences"), default="1,8,32",
                        help="with --bundle: the numbers of samples N to show (default 1,8,32)")
    doctor.add_argument("--max-new-tokens", type=bounded_int(1, MAX_NEW_TOKENS, "answers take a few hundred"),
                        default=DEFAULT_MAX_NEW_TOKENS,
                        help="with --bundle: tokens per sample the context is sized for (default %(default)s)")
    _runs(doctor, "engine.doctor")
    return parser


def main(argv: list[str] | None = None) -> int:
    from .images import MEGAPIXEL, max_pixels, set_max_pixels
    from .offline import enforce_offline

    enforce_offline()  # the project never downloads (engine/offline.py)

    args = build_parser().parse_args(argv)
    limit = max_pixels()
    if getattr(args, "max_pixels", None):
        set_max_pixels(int(args.max_pixels * MEGAPIXEL))
    try:
        return _run(args)
    finally:
        set_max_pixels(limit)  # the option is this command's, not the process's (the app and tests run many)


def _checked_run(args) -> int:
    """The subcommand, after what can be checked before it spends minutes (a bench's --json path)."""
    if args.command == "bench" and getattr(args, "json", None):
        from .bench.report import check_json_path

        check_json_path(args.json)
    return args.run(args)


def _run(args) -> int:
    threads = args.threads or (1 if args.command == "bench" else None)
    if threads:
        # Must happen before numpy / torch load their thread pools.
        for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(threads)
    return run_command("star", _checked_run, args)


if __name__ == "__main__":
    sys.exit(main())
