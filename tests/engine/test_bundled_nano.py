"""The nano bundle shipped in the package: intact, within its size budget, the default of every
command, and the README's main job (star segment on the bundled sample scene) works with it."""

import json
import subprocess
import sys
from pathlib import Path

from engine.bundle import default_bundle_dir, load_bundle
from tests.models import require

BUDGET = 40 * 1024 * 1024


def test_bundled_nano_bundle_is_complete_and_small():
    root = default_bundle_dir()
    b = load_bundle(root)  # verifies every file's size and SHA-256
    m = b.manifest
    assert m.name == "nano" and m.policy.family == "qwen2.5-vl" and m.policy.frame == "pixels-224"
    assert m.policy.prompt_family == "star" and m.policy.source.get("output") == "f32"
    assert m.policy.answer_grammar  # measured better for this model (docs/nano.md, "The shipped bundle")
    assert m.policy.vote_temperature == 0.25  # ditto: N = 8 at 0.25 beats N = 1, at 1.0 it does not
    assert sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) < BUDGET


def test_main_job_segments_the_sample_scene_with_the_default_bundle(tmp_path):
    require("llama_cpp")
    require("onnxruntime")
    from engine.samples import sample_scene

    _, query = sample_scene()
    out = tmp_path / "out"
    repo = Path(__file__).resolve().parents[2]
    proc = subprocess.run([sys.executable, "-m", "engine.cli", "segment", "engine/samples/scene.png", query, "--json",
                           "--out", str(out)], capture_output=True, text=True, timeout=300, cwd=repo)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["bundle"]["name"] == "nano"
    assert result["samples"][0]["text"].startswith("<think>")
    assert (out / "scene_mask.png").is_file() and (out / "scene_overlay.png").is_file()
