"""`star bench all --quick`: every benchmark runs, prints its table and writes its JSON; the policy bench
decodes exactly the asked number of tokens per sample (stops ignored), so its comparison is like for like."""

import json
import subprocess
import sys

from tests.models import require


def star(*args):
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], capture_output=True, text=True, timeout=600)


def test_bench_all_quick_on_the_tiny_bundle(tiny_bundle, tmp_path):
    proc = star("bench", "all", "--quick", "--bundle", str(tiny_bundle), "--json-dir", str(tmp_path))
    assert proc.returncode == 0, proc.stderr
    assert "skipped" not in proc.stdout, proc.stdout
    results = {name: json.loads((tmp_path / f"{name}.json").read_text())
               for name in ("voting", "segment", "policy", "pipeline", "track")}
    for name, payload in results.items():
        assert payload["machine"]["cores"] >= 1 and payload["table"] in proc.stdout, name
    policy = results["policy"]["rows"]
    assert [r["n"] for r in policy] == [1, 8]
    # 16 tokens per sample: the first comes from the prefill's logits, the other 15 from batched decode steps.
    assert [r["decode_tokens"] for r in policy] == [15, 8 * 15]
    assert all(r["sequential_ms"] > 0 and r["speedup"] > 0 and r["vision_ms"] > 0 and r["prefill_ms"] > 0 for r in policy)
    hit, miss = (next(r for r in results["policy"]["prefix_reuse"] if r["case"] == c) for c in ("hit", "miss"))
    assert miss["vision_ms"] > 0 and hit["vision_ms"] == 0 and hit["speedup"] > 0
    free, constrained = results["policy"]["grammar"]
    assert not free["constrained"] and constrained["constrained"]
    # the random tiny model never answers freely; under the grammar an answer that ends also parses
    assert free["answered"] == 0 and constrained["parsed"] == constrained["answered"]
    pipeline = results["pipeline"]["rows"]
    assert [r["n"] for r in pipeline] == [1, 8] and pipeline[0]["vs_n1"] == 1.0
    assert all(r["total_ms"] >= r["decode_ms"] for r in pipeline)
    assert all(r["sam_cache_hits"] == 0 for r in pipeline)
    track = results["track"]["rows"][0]
    assert track["frames"] == 12 and track["fps"] > 0 and track["init_state"]["seconds"] > 0


def test_pipeline_bench_embeds_the_scene_in_every_run():
    """The bench re-asks one image: each run must still pay the SAM encoder (the cache's own counters), as a
    user's first query on a new image does, or its table would show the encoder at ~0 ms."""
    require("llama_cpp")
    require("onnxruntime")
    from engine.bench.pipeline import measure
    from engine.pipeline import load_reasoner
    from engine.samples import sample_scene

    image, query = sample_scene()
    reasoner = load_reasoner(None, device="cpu", threads=1, max_samples=1, max_new_tokens=96)
    try:
        (row,) = measure(reasoner, image, query, [1], repeat=2, max_new_tokens=96)
    finally:
        reasoner.close()
    assert row["objects"] >= 1  # the nano bundle answers the sample query with an object, so SAM runs
    assert row["sam_cache_hits"] == 0 and row["sam_encode_ms"] > 1.0
    assert reasoner.segmenter.cache.misses == 3  # the warm-up run and both measured runs embedded


def test_no_bundle_and_no_bundled_model_says_what_to_do(tmp_path, monkeypatch):
    import pytest

    import engine.bundle
    from engine.errors import ModelFileError
    from engine.pipeline import bundle_root

    monkeypatch.setattr(engine.bundle, "default_bundle_dir", lambda: tmp_path / "nano")
    with pytest.raises(ModelFileError, match="pass --bundle DIR"):
        bundle_root(None)
    assert bundle_root(tmp_path / "mine") == tmp_path / "mine"
