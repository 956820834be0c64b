"""`star label FOLDER "query"`: one query over a folder of images, written as labelme JSON beside each
image (what labelme and X-AnyLabeling open) or as one COCO file.

Resumable: an image whose labelme file exists is skipped (unless --overwrite); the COCO form keeps a
journal of finished images beside its file and writes the COCO file from it. Every file is written
whole or not at all, so Ctrl-C loses at most the image in progress, and a re-run adds no duplicates.
A broken image is reported and skipped. Runs on a local bundle, or against a `star serve` URL.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import ImageError, StarError
from ..honesty import MaskGuard
from .interrupt import StopOnCtrlC

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}


@dataclass
class Labelled:
    width: int
    height: int
    shapes: list[dict]
    no_object: bool
    description: str = ""


@dataclass
class Summary:
    labelled: int = 0
    no_object: int = 0
    skipped: int = 0
    failed: list[tuple[str, str]] = field(default_factory=list)

    def line(self) -> str:
        return (f"{self.labelled} labelled, {self.no_object} no object, {self.skipped} already labelled (skipped), "
                f"{len(self.failed)} failed")


def find_images(folder: Path) -> list[Path]:
    if not folder.is_dir():
        raise StarError(f"{folder} is not a folder")
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


class LocalLabeller:
    """The engine in this process."""

    def __init__(self, args):
        from ..pipeline import load_reasoner

        self.args = args
        self.reasoner = load_reasoner(args.bundle, device=args.device, threads=args.threads, max_samples=args.n,
                                      max_new_tokens=args.max_new_tokens, verify=args.verify,
                                      mask_guard=MaskGuard.of_args(args))

    def __call__(self, image: Path, cancel=None) -> Labelled | None:
        """The image's shapes, or None when `cancel` stopped the run part-way (nothing is written)."""
        from ..annotations import result_shapes
        from ..images import load_image
        from ..pipeline import sampling_for

        rgb = load_image(image)
        r = self.reasoner
        sampling = sampling_for(self.args.n, seed=self.args.seed, max_new_tokens=self.args.max_new_tokens,
                                constrained=r.grammar(None), temperature=r.temperature(None))
        result = r.run(rgb, self.args.query, self.args.n, sampling=sampling, cancel=cancel)
        if result.cancelled:
            return None
        trace = result.samples[0].shown_reasoning if result.samples else ""
        return Labelled(rgb.shape[1], rgb.shape[0], result_shapes(result, show_boxes=self.args.boxes), result.no_object,
                        trace or "")

    def close(self) -> None:
        self.reasoner.close()


class RemoteLabeller:
    """A `star serve` server: the image file's bytes go as they are."""

    def __init__(self, args):
        from ..serve.client import ServeClient
        from .serve import read_api_key

        self.args = args
        self.client = ServeClient(args.server, api_key=read_api_key(args.api_key_file), model=args.model)
        self.client.model_id()  # fail now (unreachable, wrong key, ambiguous model), not on image 1

    def __call__(self, image: Path, cancel=None) -> Labelled:
        """The server's shapes for the image; a request in flight finishes (`cancel` is checked between
        images)."""
        from ..images import image_size
        from ..serve.client import ServerError

        width, height = image_size(image)  # header only; a broken file fails here, before any upload
        try:
            data = self.client.predict(image.read_bytes(), self.args.query,
                                       {"n": self.args.n, "seed": self.args.seed, "show_boxes": self.args.boxes,
                                        "max_new_tokens": self.args.max_new_tokens})
        except ServerError as exc:
            if exc.code in ("INVALID_IMAGE", "INFERENCE_ERROR", "INVALID_REQUEST"):
                raise _ImageFailed(str(exc)) from None
            raise  # unreachable server, bad key, full queue: stop the run, the next re-run resumes
        star = data.get("star", {})
        return Labelled(width, height, data["shapes"], bool(star.get("no_object", not data["shapes"])),
                        data.get("description", ""))

    def close(self) -> None:
        pass


class _ImageFailed(StarError):
    pass


class CocoJournal:
    """Finished images of a COCO run, one JSON line each, appended and synced as they finish."""

    def __init__(self, coco_file: Path):
        self.path = coco_file.with_name(f".{coco_file.name}.progress.jsonl")
        self.entries: dict[str, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    entry = json.loads(line)
                except ValueError:  # a line cut by an interruption: that image is redone
                    continue
                self.entries[entry["image"]] = entry

    def add(self, entry: dict) -> None:
        self.entries[entry["image"]] = entry
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())


def coco_document(entries: list[dict], query: str) -> dict:
    """COCO instances from labelled images: each polygon's pixels as an RLE segmentation, with its bbox and
    area, one category per label."""
    import numpy as np

    from ..annotations import rasterize
    from ..rle import encode

    categories: dict[str, int] = {}
    images, annotations = [], []
    for image_id, e in enumerate(sorted(entries, key=lambda e: e["image"]), 1):
        images.append({"id": image_id, "file_name": e["image"], "width": e["width"], "height": e["height"]})
        for shape in e["shapes"]:
            if shape["shape_type"] != "polygon":
                continue
            cat = categories.setdefault(shape["label"], len(categories) + 1)
            pixels = rasterize([shape["points"]], e["height"], e["width"])
            ys, xs = np.nonzero(pixels)
            if not len(xs):
                continue
            # RLE of the polygon's pixels as labelme fills them: pycocotools' own polygon fill differs at the
            # outline and ignores the zero-width cuts that keep holes empty.
            annotations.append({"id": len(annotations) + 1, "image_id": image_id, "category_id": cat,
                                "segmentation": encode(pixels), "area": int(pixels.sum()), "iscrowd": 0,
                                "bbox": [int(xs.min()), int(ys.min()), int(xs.max() - xs.min() + 1),
                                         int(ys.max() - ys.min() + 1)],
                                "score": shape.get("score"), "attributes": {"query": query}})
    return {"info": {"description": f"star label: {query}"}, "images": images, "annotations": annotations,
            "categories": [{"id": i, "name": n} for n, i in categories.items()]}


def keep_backup(path: Path | None) -> None:
    """Before --overwrite replaces an image's labelme file, copy it to FILE.bak once: a later run never
    replaces that copy, so it keeps what was there before the first overwrite (a hand-made annotation)."""
    if path is None:
        return
    backup = path.with_name(path.name + ".bak")
    if not backup.exists():
        shutil.copy2(path, backup)


def main(args) -> int:
    from ..annotations import labelme_document, labelme_file, write_labelme
    from ..fileio import write_json_atomically
    from ..pipeline import check_query

    check_query(args.query)
    folder = Path(args.folder)
    images = find_images(folder)
    if not images:
        print(f"star: no images in {folder} ({', '.join(sorted(IMAGE_SUFFIXES))})", file=sys.stderr)
        return 1
    coco = args.format == "coco"
    coco_file = Path(args.coco_file) if args.coco_file else folder / "star-coco.json"
    journal = CocoJournal(coco_file) if coco else None
    summary = Summary()
    todo = []
    for image in images:
        rel = image.relative_to(folder).as_posix()
        # A same-stem JSON that is not a labelme file (a result JSON, say) does not make the image done; the
        # labelme file then goes beside it under another name (engine/annotations.labelme_target).
        done = rel in journal.entries if coco else labelme_file(image) is not None
        if done and not args.overwrite:
            summary.skipped += 1
        else:
            todo.append((image, rel))
    labeller = (RemoteLabeller if args.server else LocalLabeller)(args) if todo else None
    from tqdm import tqdm

    from ..policy.types import CancelToken

    cancel = CancelToken()
    try:
        with StopOnCtrlC(cancel, "star label: stopping; finished images are saved"):
            for image, rel in tqdm(todo, desc="labelling", unit="image", disable=args.quiet or not todo):
                if cancel.cancelled:
                    break
                try:
                    out = labeller(image, cancel)
                except (ImageError, _ImageFailed, OSError) as exc:  # this image only; other errors stop the run
                    summary.failed.append((rel, str(exc)))
                    tqdm.write(f"star: {rel}: {exc} (skipped)", file=sys.stderr)
                    continue
                if out is None:  # cancelled part-way: this image runs again on the re-run
                    break
                if coco:
                    journal.add({"image": rel, "width": out.width, "height": out.height, "shapes": out.shapes})
                else:
                    keep_backup(labelme_file(image))
                    write_labelme(image, labelme_document(image.name, out.width, out.height, out.shapes,
                                                          description=out.description))
                summary.no_object += out.no_object
                summary.labelled += not out.no_object
    except KeyboardInterrupt:
        pass
    finally:
        interrupted = cancel.cancelled
        if labeller is not None:
            labeller.close()
    if coco and journal.entries:
        write_json_atomically(coco_file, coco_document(list(journal.entries.values()), args.query), indent=None)
        print(f"wrote {coco_file}")
    print(("interrupted: " if interrupted else "") + summary.line()
          + ("; run the same command again to continue" if interrupted else ""))
    for rel, why in summary.failed:
        print(f"  failed: {rel}: {why}")
    if interrupted:
        return 130
    return 1 if summary.failed else 0  # a script sees that some images have no labels
