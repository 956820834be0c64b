"""`--segmenter-from BUNDLE`: a new bundle takes another bundle's segmenter instead of exporting SAM 2
again, so SAM 2.1-L is exported once for any number of policies. The source bundle is opened with its
checksums verified (a damaged or edited file is refused, never passed on); its segmenter's files are
hard-linked into the new bundle where both lie on one file system and `link` is asked for (one copy on
disk: a hard link keeps the data alive if the source bundle is deleted or moved, and an edit through either
name changes both, which the next checksum check refuses), else copied."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from engine.bundle import SegmenterSpec, load_bundle
from engine.errors import ModelFileError

from .stages import place_file


def take_segmenter(source: str | Path, out: Path, *, link: bool = False, log=print) -> SegmenterSpec:
    """Copy (or hard-link) `source`'s segmenter files into `out` at the same bundle-relative paths and
    return its manifest section, with where it came from recorded under `source`."""
    bundle = load_bundle(source, verify="full")  # every byte re-hashed: what is passed on is what was exported
    spec = bundle.manifest.segmenter
    if spec is None:
        raise ModelFileError(f"--segmenter-from {source}: that bundle has no segmenter")
    if Path(source).resolve() == out.resolve():
        return spec
    how = []
    for rel in spec.named().values():
        how.append(place_file(bundle.path(rel), out / rel, link=link))
    log(f"segmenter from {bundle.root} ({bundle.manifest.name}): {how.count('linked')} files linked, "
        f"{how.count('copied')} copied")
    return replace(spec, source={**spec.source, "taken_from": bundle.manifest.name})
