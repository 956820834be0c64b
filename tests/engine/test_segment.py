"""engine.segment against the upstream sam2 package (SAM2Transforms, SAM2ImagePredictor) and torch."""

import tracemalloc

import numpy as np
import pytest
from PIL import Image

from engine.errors import BackendUnavailableError, InvalidPromptError, ModelFileError
from engine.segment import EmbeddingCache, SegmenterFiles, load_segmenter
from engine.segment import transforms as T
from tests.models import require, sam2_predictor


@pytest.fixture(scope="module")
def torch():
    t = require("torch")
    t.set_num_threads(1)
    return t


@pytest.fixture(scope="module")
def seg(tiny_sam2, torch):
    from engine.segment.torch_backend import load_torch_segmenter
    return load_torch_segmenter(tiny_sam2.config, tiny_sam2.checkpoint, "cpu")


@pytest.fixture(scope="module")
def oracle(tiny_sam2, torch):
    """Upstream build path (hydra compose of the packaged config + overrides) and predictor."""
    return sam2_predictor(tiny_sam2)


def _prompts(rng, k, h, w):
    x1, y1 = rng.uniform(0, w * 0.7, k), rng.uniform(0, h * 0.7, k)
    boxes = np.stack([x1, y1, x1 + rng.uniform(2, w * 0.3, k), y1 + rng.uniform(2, h * 0.3, k)], 1)
    points = np.stack([(boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2], 1)
    return boxes, points


# ---- shared pre/post-processing -------------------------------------------------------------------

@pytest.mark.parametrize("h,w,s", [(300, 400, 256), (1, 1, 256), (17, 900, 64), (1500, 1100, 1024), (90, 70, 1024)])
def test_preprocess_equals_sam2_transforms(torch, h, w, s):
    from sam2.utils.transforms import SAM2Transforms
    img = np.random.default_rng(h).integers(0, 256, (h, w, 3), dtype=np.uint8)
    ref = SAM2Transforms(resolution=s, mask_threshold=0.0)(img).numpy()
    np.testing.assert_allclose(T.preprocess(img, s)[0], ref, atol=2e-5)


@pytest.mark.parametrize("h,w", [(300, 450), (1, 1), (5, 700), (1024, 1024), (2000, 37)])
def test_upsample_equals_torch_interpolate(torch, h, w):
    from sam2.utils.transforms import SAM2Transforms
    lg = np.random.default_rng(w).normal(0, 3, (2, 3, 64, 64)).astype(np.float32)
    ref = SAM2Transforms(64, 0.0).postprocess_masks(torch.from_numpy(lg), (h, w)).numpy()
    np.testing.assert_allclose(T.upsample_logits(lg.reshape(6, 64, 64), (h, w)).reshape(ref.shape), ref, atol=1e-4)
    masks = T.logits_to_masks(lg.reshape(6, 64, 64), (h, w), row_chunk=7).reshape(ref.shape)
    decided = np.abs(ref) > 1e-4  # pixels whose logit is this close to 0 may round either way
    assert (masks == (ref > 0))[decided].all()


def test_prompt_transform_and_selection_by_hand():
    coords, labels = T.prompts_to_model(np.array([[10, 20, 110, 70]]), np.array([[50, 40]]), (100, 200), 256)
    np.testing.assert_allclose(coords[0], [[12.8, 51.2], [140.8, 179.2], [64.0, 102.4]], rtol=1e-6)
    assert labels.tolist() == [[2, 3, 1]]
    logits = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 2, 2)
    best, scores, idx = T.select_best(logits, np.array([[0.1, 0.9, 0.3], [0.5, 0.2, 0.5]], np.float32))
    assert idx.tolist() == [1, 2]  # a tie goes to the later mask, as np.argsort(scores)[::-1] does
    np.testing.assert_array_equal(best[1], logits[1, 2])


def test_preprocess_huge_image_bounded_memory():
    img = np.zeros((9000, 12000, 3), np.uint8)
    img[2000:7000, 3000:9000] = 200
    tracemalloc.start()
    out = T.preprocess(img, 256)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    # A float copy of the image would be 1.3 GB; chunked resampling stays near one chunk of rows.
    assert peak < 120 << 20, f"peak {peak / 2**20:.0f} MB"
    assert out.shape == (1, 3, 256, 256) and np.isfinite(out).all()


# ---- PyTorch backend vs SAM2ImagePredictor --------------------------------------------------------

@pytest.mark.parametrize("h,w", [(300, 450), (256, 256), (37, 500), (700, 90)])
def test_torch_backend_matches_predictor(seg, oracle, h, w):
    rng = np.random.default_rng(h * w)
    img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    boxes, points = _prompts(rng, 6, h, w)
    oracle.set_image(img)
    out = seg.segment(seg.embed(img), boxes, points)
    for i in range(len(boxes)):
        masks, scores, low = oracle.predict(point_coords=[points[i]], point_labels=[1], box=boxes[i])
        j = np.argsort(scores)[::-1][0]  # StAR's selection
        np.testing.assert_allclose(out.all_scores[i], scores, atol=1e-5)
        assert out.chosen[i] == j
        np.testing.assert_allclose(np.clip(out.logits[i], -32, 32), low[j], atol=1e-4)
        agree = (out.mask(i) == masks[j].astype(bool)).mean()
        assert agree > 0.9999, agree


def test_points_only_and_boxes_only_match_predictor(seg, oracle):
    rng = np.random.default_rng(7)
    img = rng.integers(0, 256, (200, 320, 3), dtype=np.uint8)
    boxes, points = _prompts(rng, 2, 200, 320)
    oracle.set_image(img)
    emb = seg.embed(img)
    by_point = seg.segment(emb, points=points)
    by_box = seg.segment(emb, boxes=boxes)
    for i in range(2):
        _, s_pt, _ = oracle.predict(point_coords=[points[i]], point_labels=[1])
        _, s_box, _ = oracle.predict(box=boxes[i])
        np.testing.assert_allclose(by_point.all_scores[i], s_pt, atol=1e-5)
        np.testing.assert_allclose(by_box.all_scores[i], s_box, atol=1e-5)


def test_batched_equals_one_by_one(seg):
    rng = np.random.default_rng(3)
    img = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
    boxes, points = _prompts(rng, 40, 240, 320)
    emb = seg.embed(img)
    batched = seg.segment(emb, boxes, points)
    chunked = seg.segment(emb, boxes, points, chunk=7)
    for i in range(len(boxes)):
        one = seg.segment(emb, boxes[i:i + 1], points[i:i + 1])
        np.testing.assert_allclose(batched.logits[i], one.logits[0], atol=1e-5)
        assert batched.chosen[i] == one.chosen[0]
        assert (batched.mask(i) == one.mask(0)).mean() > 0.9999
    np.testing.assert_allclose(batched.logits, chunked.logits, atol=1e-5)


def test_device_masks_equal_host_masks(seg):
    rng = np.random.default_rng(4)
    img = rng.integers(0, 256, (120, 180, 3), dtype=np.uint8)
    boxes, points = _prompts(rng, 5, 120, 180)
    emb = seg.embed(img)
    host = seg.segment(emb, boxes, points).masks
    dev = seg.device_masks(emb, boxes, points).cpu().numpy()
    assert dev.shape == host.shape and (dev == host).mean() > 0.9999


def test_cache_hit_equals_miss_and_is_bounded(tiny_sam2, torch):
    from engine.segment.torch_backend import load_torch_segmenter
    seg = load_torch_segmenter(tiny_sam2.config, tiny_sam2.checkpoint, "cpu")
    rng = np.random.default_rng(5)
    a = rng.integers(0, 256, (100, 150, 3), dtype=np.uint8)
    boxes, points = _prompts(rng, 4, 100, 150)
    first = seg.segment(seg.embed(a), boxes, points)
    emb_again = seg.embed(a.copy())           # same pixels, another array: a hit
    assert seg.cache.hits == 1 and seg.cache.misses == 1
    second = seg.segment(emb_again, boxes, points)
    np.testing.assert_array_equal(first.logits, second.logits)
    one = emb_again.nbytes
    seg.cache = EmbeddingCache(max_bytes=int(one * 2.5))
    for i in range(4):
        seg.embed(np.full((20, 20, 3), i, np.uint8))
    assert len(seg.cache) == 2


def test_image_files_of_every_kind(seg, tmp_path):
    rng = np.random.default_rng(6)
    rgb = rng.integers(0, 256, (64, 96, 3), dtype=np.uint8)
    Image.fromarray(rgb).convert("L").save(tmp_path / "grey.png")
    Image.fromarray(np.dstack([rgb, np.full((64, 96), 128, np.uint8)])).save(tmp_path / "rgba.png")
    Image.fromarray(rgb).convert("P").save(tmp_path / "palette.png")
    Image.fromarray(rgb).convert("CMYK").save(tmp_path / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65536, (64, 96))).astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(rgb[:1, :1]).save(tmp_path / "tiny.png")
    for name in ["grey.png", "rgba.png", "palette.png", "cmyk.jpg", "deep.png", "tiny.png"]:
        emb = seg.embed(tmp_path / name)
        out = seg.segment(emb, [[0, 0, 10, 10]], [[0.5, 0.5]])
        assert out.masks.shape == (1, *emb.orig_hw)
    (tmp_path / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    from engine.errors import ImageError
    with pytest.raises(ImageError):
        seg.embed(tmp_path / "broken.jpg")


def test_bad_prompts_are_clear_errors(seg):
    emb = seg.embed(np.zeros((50, 50, 3), np.uint8))
    with pytest.raises(InvalidPromptError, match="give boxes, points"):
        seg.segment(emb)
    with pytest.raises(InvalidPromptError, match=r"shape \[K, 4\]"):
        seg.segment(emb, [[1, 2, 3]])
    with pytest.raises(InvalidPromptError, match="NaN"):
        seg.segment(emb, [[1, 2, 3, np.nan]])
    with pytest.raises(InvalidPromptError, match="2 boxes but 1 points"):
        seg.segment(emb, [[1, 2, 3, 4], [1, 2, 3, 4]], [[1, 1]])
    empty = seg.segment(emb, np.zeros((0, 4)))
    assert empty.masks.shape == (0, 50, 50)


def test_bad_checkpoints_are_clear_errors(tiny_sam2, torch, tmp_path):
    from engine.segment.torch_backend import build_model
    with pytest.raises(ModelFileError, match="does not exist"):
        build_model(tiny_sam2.config, tmp_path / "nope.pt")
    (tmp_path / "trunc.pt").write_bytes(tiny_sam2.checkpoint.read_bytes()[:5000])
    with pytest.raises(ModelFileError, match="could not be read"):
        build_model(tiny_sam2.config, tmp_path / "trunc.pt")
    sd = torch.load(tiny_sam2.checkpoint, weights_only=True)
    del sd["model"]["no_mem_embed"]
    torch.save(sd, tmp_path / "partial.pt")
    with pytest.raises(ModelFileError, match="does not fit config"):
        build_model(tiny_sam2.config, tmp_path / "partial.pt")
    sd = torch.load(tiny_sam2.checkpoint, weights_only=True)
    sd["model"]["no_mem_embed"][0, 0, 0] = float("nan")
    torch.save(sd, tmp_path / "nan.pt")
    with pytest.raises(ModelFileError, match="non-finite"):
        build_model(tiny_sam2.config, tmp_path / "nan.pt")
    # A pickle that would run code is refused by weights_only loading, not executed.
    import pickle
    (tmp_path / "evil.pt").write_bytes(pickle.dumps(__import__("os").system))
    with pytest.raises(ModelFileError):
        build_model(tiny_sam2.config, tmp_path / "evil.pt")
    with pytest.raises(ModelFileError, match="not found"):
        build_model("sam2.1_hiera_nonexistent", None)


# ---- ONNX Runtime backend -------------------------------------------------------------------------

def test_onnx_matches_torch(seg, tiny_sam2_onnx):
    from engine.segment.onnx_backend import OnnxSegmenter
    onnx = OnnxSegmenter(tiny_sam2_onnx.encoder, tiny_sam2_onnx.decoder, threads=1)
    assert onnx.describe()["providers"] == ["CPUExecutionProvider"] and onnx.image_size == seg.image_size
    rng = np.random.default_rng(8)
    img = rng.integers(0, 256, (210, 330, 3), dtype=np.uint8)
    et, eo = seg.embed(img), onnx.embed(img)
    np.testing.assert_allclose(eo.features["image_embed"], et.features["image_embed"].numpy(), atol=1e-4)
    boxes, points = _prompts(rng, 33, 210, 330)
    for b, p in [(boxes, points), (boxes[:1], points[:1]), (None, points[:3]), (boxes[:3], None)]:
        a, o = seg.segment(et, b, p), onnx.segment(eo, b, p)
        np.testing.assert_allclose(o.logits, a.logits, atol=1e-3)
        np.testing.assert_allclose(o.all_scores, a.all_scores, atol=1e-4)


def test_fp16_onnx_export_stays_close_to_fp32(seg, tiny_sam2, tmp_path):
    """star-export sam2 --fp16: float16 graphs listed in the manifest; on the CPU the engine keeps fp32,
    on a GPU it takes fp16; fp16 masks agree with the PyTorch reference (IoU) and logits stay close."""
    import json

    from engine.bundle import load_bundle
    from engine.segment.onnx_backend import OnnxSegmenter
    from export.cli import main

    out = tmp_path / "bundle"
    assert main(["sam2", "--checkpoint", str(tiny_sam2.checkpoint), "--config", str(tiny_sam2.config), "--fp16",
                 "--out", str(out)]) == 0
    spec = json.loads((out / "bundle.json").read_text())["segmenter"]
    assert spec["encoder_onnx_fp16"] == "sam2/sam2_encoder.fp16.onnx"
    files = load_bundle(out).segmenter_files()
    assert files.onnx_pair("cpu") == (files.encoder_onnx, files.decoder_onnx)
    assert files.onnx_pair("cuda") == (files.encoder_onnx_fp16, files.decoder_onnx_fp16)
    half = OnnxSegmenter(files.encoder_onnx_fp16, files.decoder_onnx_fp16, threads=1)
    rng = np.random.default_rng(9)
    img = rng.integers(0, 256, (200, 260, 3), dtype=np.uint8)
    boxes, points = _prompts(rng, 12, 200, 260)
    ref, got = seg.segment(seg.embed(img), boxes, points), half.segment(half.embed(img), boxes, points)
    scale = float(np.abs(ref.logits).max())
    assert float(np.abs(got.logits - ref.logits).max()) < 0.05 * scale
    inter = np.logical_and(got.masks, ref.masks).sum((1, 2))
    union = np.logical_or(got.masks, ref.masks).sum((1, 2))
    assert float(np.mean(inter / np.maximum(union, 1))) > 0.95


def test_onnx_bad_files(tiny_sam2_onnx, tmp_path):
    from engine.segment.onnx_backend import OnnxSegmenter
    with pytest.raises(ModelFileError, match="does not exist"):
        OnnxSegmenter(tmp_path / "a.onnx", tiny_sam2_onnx.decoder)
    (tmp_path / "bad.onnx").write_bytes(tiny_sam2_onnx.encoder.read_bytes()[:1000])
    with pytest.raises(ModelFileError, match="could not be loaded"):
        OnnxSegmenter(tmp_path / "bad.onnx", tiny_sam2_onnx.decoder)
    with pytest.raises(ModelFileError, match="does not look like a SAM 2 decoder"):
        OnnxSegmenter(tiny_sam2_onnx.encoder, tiny_sam2_onnx.encoder)


def test_load_segmenter_auto(tiny_sam2, tiny_sam2_onnx, torch):
    files = SegmenterFiles(config=tiny_sam2.config, checkpoint=tiny_sam2.checkpoint,
                           encoder_onnx=tiny_sam2_onnx.encoder, decoder_onnx=tiny_sam2_onnx.decoder)
    assert load_segmenter(files, device="cpu").name == "onnx"   # no engines: TensorRT passed over
    assert load_segmenter(files, "torch", device="cpu").name == "torch"
    with pytest.raises(ModelFileError, match="tensorrt segmenter needs files"):
        load_segmenter(files, "tensorrt")
    with pytest.raises(BackendUnavailableError, match="no segmenter backend"):
        load_segmenter(SegmenterFiles(), device="cpu")


def test_tensorrt_unavailable_is_explained(tmp_path):
    from engine.segment import tensorrt_backend
    reason = tensorrt_backend.unavailable_reason()
    if reason is None:
        pytest.skip("TensorRT and a GPU are present here")
    with pytest.raises(BackendUnavailableError, match="use backend='onnx'"):
        tensorrt_backend.TensorRTSegmenter(tmp_path / "e.engine", tmp_path / "d.engine")


def test_tensorrt_profiles_cover_every_query_shape():
    from export.tensorrt import decoder_profiles, fp16_flag_supported
    coords, labels = decoder_profiles(max_prompts=256, opt_prompts=32)
    assert coords.min == (1, 1, 2) and coords.opt == (32, 3, 2) and coords.max == (256, 8, 2)
    assert labels.max == (256, 8) and labels.name == "point_labels"
    # The prompts the engine produces (box + click) fit the profile.
    c, lb = T.prompts_to_model(np.zeros((32, 4)), np.zeros((32, 2)), (10, 10), 1024)
    assert all(lo <= v <= hi for v, lo, hi in zip(c.shape, coords.min, coords.max))
    with pytest.raises(ValueError):
        decoder_profiles(max_prompts=8, opt_prompts=32)

    class V10:
        class BuilderFlag:
            FP16 = 1

    class V11:
        class BuilderFlag:
            pass
    assert fp16_flag_supported(V10) and not fp16_flag_supported(V11)


# ---- interactive refinement (the app's click and box tools) ---------------------------------------

REFINE_PROMPTS = [  # (clicks, labels, box): what an annotator does, in the original pixels of a 220 x 300 image
    ([[150, 110]], [1], None),
    ([[150, 110], [60, 40]], [1, 0], None),
    ([[150, 110], [60, 40], [240, 180], [30, 200]], [1, 0, 1, 0], None),
    (None, None, [40, 30, 200, 170]),
    ([[100, 90], [180, 150]], [1, 0], [40, 30, 200, 170]),
]


@pytest.mark.parametrize("clicks,labels,box", REFINE_PROMPTS)
def test_refine_matches_predictor_with_clicks_and_box(seg, oracle, tiny_sam2_onnx, clicks, labels, box):
    """Positive and negative clicks with or without a box: SAM2ImagePredictor.predict's top-scoring mask,
    on the PyTorch and ONNX Runtime backends, from one embedding (the cache is hit, nothing re-encoded)."""
    from engine.segment.onnx_backend import OnnxSegmenter

    img = np.random.default_rng(21).integers(0, 256, (220, 300, 3), dtype=np.uint8)
    oracle.set_image(img)
    masks, scores, low = oracle.predict(point_coords=None if clicks is None else np.array(clicks, float),
                                        point_labels=None if labels is None else np.array(labels),
                                        box=None if box is None else np.array(box, float))
    j = np.argsort(scores)[::-1][0]
    onnx = OnnxSegmenter(tiny_sam2_onnx.encoder, tiny_sam2_onnx.decoder, threads=1)
    for backend, atol in ((seg, 1e-4), (onnx, 1e-3)):
        emb = backend.embed(img)
        misses = backend.cache.misses
        got = backend.refine(backend.embed(img), clicks, labels, box)
        assert backend.cache.misses == misses  # the same embedding: no second encode
        assert abs(got.score - float(scores[j])) < 1e-4 and got.mask.shape == (220, 300)
        np.testing.assert_allclose(np.clip(got.logits, -32, 32), low[j], atol=atol)
        assert (got.mask == masks[j].astype(bool)).mean() > 0.9999
        assert emb.key == backend.embed(img).key


def test_refine_refuses_what_sam_cannot_take(seg):
    img = np.zeros((64, 64, 3), np.uint8)
    emb = seg.embed(img)
    for clicks, labels, box in [(None, None, None), ([[1, 2]], [2], None), ([[1, 2]], [1, 0], None),
                                ([[np.nan, 2]], [1], None)]:
        with pytest.raises(InvalidPromptError):
            seg.refine(emb, clicks, labels, box)
    seg.max_points = 3
    try:
        with pytest.raises(InvalidPromptError, match="at most 3"):
            seg.refine(emb, [[1, 2], [3, 4]], [1, 1], [0, 0, 10, 10])
        assert seg.refine(emb, [[1, 2]], [1], [0, 0, 10, 10]).mask.shape == (64, 64)
    finally:
        seg.max_points = None


# ---- masks that stay on the device (the vote on the GPU) -------------------------------------------

def test_device_selection_equals_the_host_selection(torch):
    """engine.segment.device_masks (torch, where the logits are) against transforms.select_best +
    logits_to_masks (NumPy): ties go to the later mask on both sides, the same pixels above the threshold."""
    from engine.segment.device_masks import best_masks

    rng = np.random.default_rng(11)
    low = rng.normal(0, 3, (6, 3, 16, 16)).astype(np.float32)
    iou = rng.uniform(0, 1, (6, 3)).astype(np.float32)
    iou[0] = [0.5, 0.5, 0.2]  # a tie: the later one wins, as StAR's argsort picks
    iou[1] = [0.7, 0.7, 0.7]
    masks, scores = best_masks(torch, torch.from_numpy(low), torch.from_numpy(iou), (50, 70))
    best, ref_scores, chosen = T.select_best(low, iou)
    assert chosen[0] == 1 and chosen[1] == 2
    np.testing.assert_array_equal(scores, ref_scores)
    ref = T.logits_to_masks(best, (50, 70))
    exact = np.abs(T.upsample_logits(best, (50, 70))) > 1e-4  # a logit this close to 0 may round either way
    assert (masks.numpy() == ref)[exact].all()


def test_onnx_io_binding_path_equals_the_host_path(tiny_sam2_onnx, torch):
    """ONNX Runtime's device path (outputs bound to tensors by pointer, selection and upsampling in torch) run
    on the CPU: the same masks and scores as the host path. On a GPU the same code binds CUDA tensors; here
    the segmenter on the CPU provider says its masks do not stay on a device, so a run votes on the CPU."""
    from engine.pipeline import votes_on_device
    from engine.segment.onnx_backend import OnnxSegmenter

    onnx = OnnxSegmenter(tiny_sam2_onnx.encoder, tiny_sam2_onnx.decoder, threads=1)
    rng = np.random.default_rng(12)
    img = rng.integers(0, 256, (150, 210, 3), dtype=np.uint8)
    boxes, points = _prompts(rng, 5, 150, 210)
    emb = onnx.embed(img)
    host = onnx.segment(emb, boxes, points)
    masks, scores = onnx.device_segment(emb, boxes, points, device="cpu")
    np.testing.assert_allclose(scores, host.scores, atol=1e-6)
    assert masks.shape == host.masks.shape and (masks.numpy() == host.masks).mean() > 0.9999
    assert not onnx.device_outputs and not votes_on_device(onnx)
