"""engine.voting against a plain transcription of StAR's reference vote and pycocotools IoU."""

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as coco_mask

from engine.kernels import cpu_iou
from engine.voting import CpuBitEngine, VoteConfig, grid_configs, majority_vote, pairwise_iou, sweep

HAS_COMPILER = cpu_iou._compiler() is not None


@pytest.fixture(params=["c", "numpy"])
def cpu_kernel(request, monkeypatch):
    """Run a test once with the compiled IoU kernel and once with numpy crop pairs."""
    if request.param == "c" and not HAS_COMPILER:
        pytest.skip("no C compiler")
    monkeypatch.setenv("STAR_CPU_KERNEL", "1" if request.param == "c" else "0")
    cpu_iou.library.cache_clear()
    yield request.param
    cpu_iou.library.cache_clear()


# ---- the reference, written out plainly (full masks, logical ops, Python loops) -------------

def reference_vote(samples, cfg, shape):
    valid = sum(s is not None for s in samples)
    cands = [(m, float(sc), (lb[0] if lb else None), si) for si, s in enumerate(samples) if s for (m, sc, *lb) in s]
    counts = [len(s) for s in samples if s is not None]
    empty = np.zeros(shape, bool)
    if valid == 0 or counts.count(0) / valid >= cfg.no_object_threshold:
        return empty
    pos = [c for c in counts if c > 0]
    k = Counter(pos).most_common(1)[0][0] if pos else 0
    if k <= 0 or not cands:
        return empty
    clusters = []
    for idx, (m, _, _, _) in enumerate(cands):
        for cl in clusters:
            rep = cands[cl[0]][0]
            inter, union = np.logical_and(m, rep).sum(), np.logical_or(m, rep).sum()
            if (0.0 if union == 0 else inter / union) >= cfg.iou_threshold:
                cl.append(idx)
                break
        else:
            clusters.append([idx])
    infos = []
    for cl in clusters:
        votes = len({cands[i][3] for i in cl})
        infos.append({"members": cl, "votes": votes, "ratio": votes / max(1, valid), "avg": float(np.mean([cands[i][1] for i in cl]))})
    kept = [c for c in infos if c["ratio"] >= cfg.vote_threshold] or infos
    sel = sorted(kept, key=lambda c: (c["votes"], c["avg"]), reverse=True)[: min(len(kept), k)]
    out = empty.copy()
    for c in sel:
        members = [cands[i] for i in c["members"]]
        if cfg.mode == "best":
            out |= max(members, key=lambda x: (x[1], x[0].sum()))[0]
        else:
            masks = np.stack([x[0] for x in members]).astype(np.float32)
            sc = np.array([x[1] for x in members], np.float32)
            if np.all(sc <= 0):
                sc = np.ones_like(sc)
            with np.errstate(invalid="ignore", divide="ignore"):
                out |= np.tensordot(sc / sc.sum(), masks, axes=(0, 0)) >= cfg.pixel_threshold
    return out


def _blob(rng, h, w, cy, cx, ry, rx, jitter=0):
    yy, xx = np.ogrid[:h, :w]
    cy, cx = cy + rng.integers(-jitter, jitter + 1), cx + rng.integers(-jitter, jitter + 1)
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1


def random_samples(rng, n, h=48, w=70, abstain=0.1, none=0.15):
    centres = [(rng.integers(8, h - 8), rng.integers(8, w - 8), rng.integers(3, 10), rng.integers(3, 14)) for _ in range(4)]
    samples = []
    for _ in range(n):
        r = rng.random()
        if r < abstain:
            samples.append(None)
        elif r < abstain + none:
            samples.append([])
        else:
            k = rng.integers(1, 4)
            objs = []
            for j in rng.choice(len(centres), size=k, replace=False):
                m = _blob(rng, h, w, *centres[j], jitter=int(rng.integers(0, 3)))
                score = float(np.round(rng.random(), 2)) if rng.random() < 0.8 else -0.5
                objs.append((m, score, ["cup", "mug", None][rng.integers(0, 3)]))
            samples.append(objs)
    return samples


@pytest.mark.parametrize("seed", range(12))
def test_matches_reference_on_random_cases(seed, cpu_kernel):
    rng = np.random.default_rng(seed)
    samples = random_samples(rng, int(rng.integers(1, 24)))
    for cfg in (VoteConfig(), VoteConfig(mode="consensus"), VoteConfig(iou_threshold=0.6, vote_threshold=0.1, pixel_threshold=0.6, mode="consensus")):
        ours = majority_vote(samples, cfg, shape=(48, 70))
        assert np.array_equal(ours.mask, reference_vote(samples, cfg, (48, 70))), cfg


def test_sweep_equals_individual_votes():
    rng = np.random.default_rng(3)
    samples = random_samples(rng, 16)
    configs = grid_configs()
    assert len(configs) == 216
    results = sweep(samples, configs, reduce=lambda r: r.mask)
    for cfg, mask in results[::7]:
        assert np.array_equal(mask, reference_vote(samples, cfg, (48, 70))), cfg


def test_pairwise_iou_matches_pycocotools(cpu_kernel):
    rng = np.random.default_rng(0)
    masks = np.stack([_blob(rng, 65, 130, 30, 60, 15, 40, jitter=12) for _ in range(9)] + [np.zeros((65, 130), bool)] * 2)
    ours = pairwise_iou(masks)
    rles = [coco_mask.encode(np.asfortranarray(m.astype(np.uint8))) for m in masks]
    ref = coco_mask.iou(rles, rles, [0] * len(rles))
    assert ours.dtype == np.float64 and ours.shape == (11, 11)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-12)  # pycocotools also gives 0 for empty vs empty


def test_pairwise_iou_odd_widths_and_exact_counts(cpu_kernel):
    rng = np.random.default_rng(5)
    for w in (1, 7, 63, 64, 65, 129, 200):
        masks = rng.random((5, 9, w)) < 0.4
        masks[1] = False  # an empty mask
        masks[2] = False
        masks[2, 3:5, w - 1] = True  # pixels only in the last column: the last word runs past the edge
        inter = (masks[:, None] & masks[None]).sum((2, 3))
        union = (masks[:, None] | masks[None]).sum((2, 3))
        expected = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
        assert np.array_equal(pairwise_iou(masks), expected)
        engine = CpuBitEngine(list(masks))
        assert engine.kernel == cpu_kernel
        assert np.array_equal(engine.intersection_matrix(), inter)
        order = [4, 0, 0, 2, 1, 3]  # any order, repeats allowed
        assert np.array_equal(engine.intersections(3, order), inter[3, order])


def test_c_kernel_is_built_once_and_checks_indices(tmp_path, monkeypatch):
    if not HAS_COMPILER:
        pytest.skip("no C compiler")
    monkeypatch.setenv("STAR_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("STAR_CPU_KERNEL", "1")
    cpu_iou.library.cache_clear()
    try:
        assert cpu_iou.unavailable_reason() == ""
        built = list((tmp_path / "kernels").glob("iou_cpu-*.so"))
        assert len(built) == 1
        mtime = built[0].stat().st_mtime_ns
        cpu_iou.library.cache_clear()
        assert cpu_iou.library() is not None and built[0].stat().st_mtime_ns == mtime  # loaded, not rebuilt
        engine = CpuBitEngine([_sq(2, 3), _sq(4, 5)])
        assert engine.intersections(0, [1, 0]).tolist() == [4, 16]
        with pytest.raises(IndexError):
            engine.intersections(0, [2])
    finally:
        cpu_iou.library.cache_clear()


def test_without_a_compiler_the_vote_uses_numpy(tmp_path, monkeypatch):
    monkeypatch.setenv("STAR_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv("CC", str(tmp_path / "no-such-compiler"))
    cpu_iou.library.cache_clear()
    try:
        assert "could not build" in cpu_iou.unavailable_reason()
        engine = CpuBitEngine([_sq(2, 3), _sq(4, 5)])
        assert engine.kernel == "numpy" and engine.intersections(0, [1]).tolist() == [4]
    finally:
        cpu_iou.library.cache_clear()


def _sq(y, x, s=4, shape=(20, 20)):
    m = np.zeros(shape, bool)
    m[y:y + s, x:x + s] = True
    return m


def test_all_abstain_and_all_no_object():
    r = majority_vote([None, None], shape=(5, 6))
    assert r.no_object and r.mask.shape == (5, 6) and not r.mask.any() and r.valid_runs == 0 and r.abstained == 2
    r = majority_vote([[], [], None], shape=(5, 6))
    assert r.no_object and r.no_object_votes == 2 and r.valid_runs == 2


def test_no_object_threshold_is_inclusive():
    a = _sq(2, 2)
    r = majority_vote([[], [(a, 0.9, "x")]])  # 1/2 >= 0.5 -> no object
    assert r.no_object and not r.mask.any()
    r = majority_vote([[], [(a, 0.9, "x")], [(a, 0.8, "x")]])  # 1/3
    assert not r.no_object and np.array_equal(r.mask, a)


def test_k_ties_go_to_first_seen_and_k_above_cluster_count():
    a, b, c = _sq(0, 0), _sq(10, 10), _sq(0, 12)
    # counts 2, 1, 1, 2 -> K = 2 (first seen among the tie 2:2)
    samples = [[(a, 0.9, "a"), (b, 0.8, "b")], [(c, 0.7, "c")], [(c, 0.7, "c")], [(a, 0.9, "a"), (b, 0.5, "b")]]
    r = majority_vote(samples)
    assert r.k == 2
    assert [cl.votes for cl in r.clusters] == [2, 2, 2]
    # (votes, mean score): a (2, 0.9) > c (2, 0.7) > b (2, 0.65); top 2 = a, c
    assert r.selected == [0, 2] and r.labels == ["a", "c"]
    assert np.array_equal(r.mask, a | c)
    # K larger than the number of clusters: all of them
    r = majority_vote([[(a, 0.9), (b, 0.9), (c, 0.9)], [(a, 0.9), (b, 0.9), (c, 0.9)]], VoteConfig(iou_threshold=0.0))
    assert r.k == 3 and len(r.clusters) == 1 and len(r.selected) == 1


def test_equal_keys_keep_cluster_order():
    a, b = _sq(0, 0), _sq(10, 10)
    r = majority_vote([[(b, 0.5)], [(a, 0.5)]], VoteConfig(vote_threshold=0.0))
    assert r.k == 1 and r.selected == [0] and np.array_equal(r.mask, b)


def test_vote_ratio_filter_falls_back_to_all_clusters():
    masks = [_sq(0, 4 * i) for i in range(5)]
    r = majority_vote([[(m, 0.1 * (i + 1))] for i, m in enumerate(masks)], VoteConfig(vote_threshold=0.5))
    # every cluster has ratio 0.2 < 0.5 -> fall back to all; highest mean score wins
    assert r.selected == [4] and np.array_equal(r.mask, masks[4])


def test_votes_count_distinct_samples():
    a = _sq(0, 0)
    a2 = a.copy()
    r = majority_vote([[(a, 0.9), (a2, 0.8)], [(_sq(10, 10), 0.7), (_sq(10, 0), 0.7)]])
    assert r.clusters[0].votes == 1 and len(r.clusters[0].members) == 2


def test_empty_masks_never_cluster_together():
    e = np.zeros((6, 6), bool)
    r = majority_vote([[(e, 0.9)], [(e, 0.8)]])
    assert len(r.clusters) == 2 and not r.mask.any()


def test_best_prefers_score_then_area():
    small, big = _sq(0, 0, 4), _sq(0, 0, 5)
    r = majority_vote([[(small, 0.9)], [(big, 0.9)]], VoteConfig(iou_threshold=0.5))
    assert np.array_equal(r.mask, big)


def test_consensus_weights_all_non_positive_are_uniform():
    a, b, c = _sq(0, 0, 6), _sq(0, 0, 5), _sq(1, 1, 5)
    r = majority_vote([[(a, -1.0)], [(b, 0.0)], [(c, -0.2)]], VoteConfig(mode="consensus", iou_threshold=0.3))
    expected = (a.astype(int) + b + c) / 3 >= 0.5
    assert np.array_equal(r.mask, expected)


def test_shape_mismatch_is_an_error():
    from engine.errors import ShapeMismatchError

    with pytest.raises(ShapeMismatchError):
        majority_vote([[(np.zeros((3, 3), bool), 1.0)], [(np.zeros((3, 4), bool), 1.0)]])


def test_many_samples_and_large_masks_stay_light():
    # 256 samples at 4096 x 4096: the same arrays are passed again (no copies); packed crops only.
    big = [np.zeros((4096, 4096), bool) for _ in range(3)]
    big[0][1000:1800, 500:1500] = True
    big[1][1010:1800, 500:1500] = True
    big[2][3000:3100, 3000:3100] = True
    samples = [[(big[i % 2], 0.9, "x")] if i % 5 else [(big[2], 0.5, "y")] for i in range(256)]
    import tracemalloc

    tracemalloc.start()
    r = majority_vote(samples)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert len(r.clusters) == 2 and [c.votes for c in r.clusters] == [52, 204] and r.labels == ["x"]
    assert peak < 200 * 2**20, f"peak {peak / 2**20:.0f} MiB"


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_kernel_compiles_to_ptx(tmp_path):
    src = Path(__file__).resolve().parents[2] / "engine" / "kernels" / "iou_cluster.cu"
    out = tmp_path / "iou.ptx"
    subprocess.run(["nvcc", "--ptx", "-arch=sm_80", str(src), "-o", str(out)], check=True, capture_output=True)
    ptx = out.read_text()
    for entry in ("pack_bits_u8", "pack_bits_f32", "and_popcount_gram", "combine_parts"):
        assert f".entry {entry}" in ptx


def _gpu_available():
    from engine.kernels.cuda_voting import unavailable_reason

    return unavailable_reason() == ""


@pytest.mark.gpu
@pytest.mark.skipif(not _gpu_available(), reason="needs CuPy and a CUDA GPU")
@pytest.mark.parametrize("dtype", ["bool", "float32"])
def test_cuda_engine_equals_cpu(dtype):
    import cupy as cp

    rng = np.random.default_rng(11)
    samples = random_samples(rng, 32, h=97, w=131)
    for cfg in (VoteConfig(), VoteConfig(mode="consensus")):
        cpu = majority_vote(samples, cfg, backend="cpu")
        dev = [None if s is None else [(cp.asarray(m if dtype == "bool" else np.where(m, 1.5, -2.0).astype(np.float32)), sc, lb) for m, sc, lb in s] for s in samples]
        gpu = majority_vote(dev, cfg, backend="cuda")
        assert gpu.backend == "cuda"
        assert np.array_equal(gpu.mask, cpu.mask)
        assert [(c.votes, [m.index for m in c.members]) for c in gpu.clusters] == [(c.votes, [m.index for m in c.members]) for c in cpu.clusters]
