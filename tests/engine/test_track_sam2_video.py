"""SAM 2's video memory on frames read one at a time (engine/track/sam2_video.py) against sam2's own video
path (`build_sam2_video_predictor` + `init_state` on a folder of JPEGs, the whole clip in memory): the same
masks and object scores on every frame, forward and backward, while only a few frames are ever decoded
at once and the outputs the memory can no longer reach are dropped."""

import numpy as np
import pytest
from PIL import Image

from tests.models import require

FRAMES, H, W = 40, 72, 96


def _clip(folder):
    """A bright square sliding right over a dark, textured background, as JPEGs named as sam2 wants them."""
    rng = np.random.default_rng(3)
    background = rng.integers(0, 60, (H, W, 3), dtype=np.uint8)
    folder.mkdir()
    for i in range(FRAMES):
        rgb = background.copy()
        rgb[20:44, 10 + i:34 + i] = (230, 200, 40)
        Image.fromarray(rgb).save(folder / f"{i:05d}.jpg", quality=95)
    return folder


@pytest.mark.timeout(600)
def test_lazy_frames_give_sam2s_own_tracking_frame_for_frame(tiny_sam2, tmp_path):
    require("torch")
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    from engine.frames import FrameSource
    from engine.segment.torch_backend import build_model
    from engine.track.sam2_video import VideoMemoryTracker

    folder = _clip(tmp_path / "clip")
    key, box = 4, (14, 20, 38, 44)
    reference = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", str(tiny_sam2.checkpoint),
                                           device="cpu", hydra_overrides_extra=tiny_sam2.overrides)
    state = reference.init_state(str(folder))
    with torch.inference_mode():
        reference.add_new_points_or_box(state, frame_idx=key, obj_id=1, box=np.asarray(box, np.float32))
        # back to the start first, then forward: the order the tracker keeps (each pass then drops only what
        # its own direction can no longer reach)
        expected = {f: (m[0, 0] > 0).numpy() for f, _, m in
                    reference.propagate_in_video(state, start_frame_idx=key, reverse=True)}
        expected |= {f: (m[0, 0] > 0).numpy() for f, _, m in reference.propagate_in_video(state, start_frame_idx=key)}
    expected_scores = {f: float(out["object_score_logits"].reshape(-1)[0])
                       for kind in ("cond_frame_outputs", "non_cond_frame_outputs")
                       for f, out in state["output_dict_per_obj"][0][kind].items()}

    ours = VideoMemoryTracker(build_model(tiny_sam2.config, tiny_sam2.checkpoint, video=True), FrameSource(folder),
                              keep_frames=3)
    ours.prompt(key, 1, box=box)
    got = dict(ours.propagate(key, reverse=True)) | dict(ours.propagate(key))
    assert sorted(got) == sorted(expected) == list(range(FRAMES))
    for frame in range(FRAMES):
        mask, score = got[frame][1]
        assert mask.shape == (H, W) and (mask == expected[frame]).all(), frame
        assert score == pytest.approx(expected_scores[frame], abs=1e-5), frame
    kept = ours.state["output_dict_per_obj"][0]["non_cond_frame_outputs"]
    assert len(kept) <= ours.reach + 1 < FRAMES - 1    # old outputs dropped: memory stays flat
    assert len(ours.frames._cache) <= 3                 # never more than a few frames decoded at once


@pytest.mark.timeout(600)
def test_a_track_reseeded_from_a_mask_follows_as_sam2s_own_add_new_mask(tiny_sam2, tmp_path):
    """What a resumed `star track` does on its last finished frame: the mask as the prompt, then forward;
    the same masks as sam2's own `add_new_mask` on its own video state."""
    require("torch")
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    from engine.frames import FrameSource
    from engine.segment.torch_backend import build_model
    from engine.track.sam2_video import VideoMemoryTracker

    folder = _clip(tmp_path / "clip")
    start, seed = 10, np.zeros((H, W), bool)
    seed[20:44, 20:44] = True
    reference = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", str(tiny_sam2.checkpoint),
                                           device="cpu", hydra_overrides_extra=tiny_sam2.overrides)
    state = reference.init_state(str(folder))
    with torch.inference_mode():
        reference.add_new_mask(state, frame_idx=start, obj_id=3, mask=seed)
        expected = {f: (m[0, 0] > 0).numpy() for f, _, m in
                    reference.propagate_in_video(state, start_frame_idx=start, max_frame_num_to_track=8)}
    ours = VideoMemoryTracker(build_model(tiny_sam2.config, tiny_sam2.checkpoint, video=True), FrameSource(folder))
    ours.prompt_mask(start, 3, seed)
    got = dict(ours.propagate(start, max_frames=8))
    assert sorted(got) == sorted(expected) == list(range(start, start + 9))
    for frame, outputs in got.items():
        assert (outputs[3][0] == expected[frame]).all(), frame


@pytest.mark.timeout(600)
def test_clicks_on_a_tracked_frame_correct_it_and_carry_on_as_sam2s_own_points(tiny_sam2, tmp_path):
    """An annotator's correction (the app's click tool on a video): a box on frame 4 followed to the end, then
    two clicks (one adds, one removes) on frame 12 replacing the clicks there, then forward again; the same
    masks as sam2's own `add_new_points_or_box(clear_old_points=True)` on its own video state."""
    require("torch")
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    from engine.frames import FrameSource
    from engine.segment.torch_backend import build_model
    from engine.track.sam2_video import VideoMemoryTracker

    folder = _clip(tmp_path / "clip")
    key, box, at = 4, (14, 20, 38, 44), 12
    clicks = [(30.0, 30.0, True), (60.0, 50.0, False)]
    reference = build_sam2_video_predictor("configs/sam2.1/sam2.1_hiera_t.yaml", str(tiny_sam2.checkpoint),
                                           device="cpu", hydra_overrides_extra=tiny_sam2.overrides)
    state = reference.init_state(str(folder))
    with torch.inference_mode():
        reference.add_new_points_or_box(state, frame_idx=key, obj_id=1, box=np.asarray(box, np.float32))
        for _ in reference.propagate_in_video(state, start_frame_idx=key, max_frame_num_to_track=12):
            pass
        _, _, logits = reference.add_new_points_or_box(
            state, frame_idx=at, obj_id=1, points=np.asarray([c[:2] for c in clicks], np.float32),
            labels=np.asarray([1, 0], np.int32), clear_old_points=True)
        expected_at = (logits[0, 0] > 0).numpy()
        expected = {f: (m[0, 0] > 0).numpy() for f, _, m in
                    reference.propagate_in_video(state, start_frame_idx=at, max_frame_num_to_track=10)}

    ours = VideoMemoryTracker(build_model(tiny_sam2.config, tiny_sam2.checkpoint, video=True), FrameSource(folder))
    ours.prompt(key, 1, box=box)
    for _ in ours.propagate(key, max_frames=12):
        pass
    assert (ours.prompt_clicks(at, 1, clicks) == expected_at).all()
    got = dict(ours.propagate(at, max_frames=10))
    assert sorted(got) == sorted(expected) == list(range(at, at + 11))
    for frame, outputs in got.items():
        assert (outputs[1][0] == expected[frame]).all(), frame
