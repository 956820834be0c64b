"""`track()` (engine/track/run.py): the policy asked on the key frame exactly as `star segment` asks it,
every frame of the clip given once, backward then forward, and the policy asked again where a track is lost
(its new objects resuming the tracks they overlap, or starting new ones)."""

import numpy as np
import pytest
from PIL import Image

from engine.frames import FrameSource
from engine.pipeline import LocalReasoner
from engine.track.run import TrackRun, track
from tests.models import require
from tests.scripted import BLUE, RANDOM_SAM, RED, H, ReplayPolicy, W, answer, to_original


def _clip(folder, count):
    folder.mkdir()
    for i in range(count):
        rgb = np.full((H, W, 3), 30, np.uint8)
        rgb[40:80, 30 + i:90 + i] = (220, 40, 40)
        Image.fromarray(rgb).save(folder / f"{i:05d}.png")
    return folder


@pytest.mark.timeout(600)
def test_the_key_frames_answer_is_followed_back_and_forth_through_the_clip(tiny_sam2, tiny_segmenter, tmp_path):
    require("torch")
    from engine.segment.torch_backend import build_model
    from engine.track.sam2_video import VideoMemoryTracker

    source = FrameSource(_clip(tmp_path / "clip", 14))
    reasoner = LocalReasoner(ReplayPolicy([answer(RED)]), tiny_segmenter, frame="pixels-112", **RANDOM_SAM)
    tracker = VideoMemoryTracker(build_model(tiny_sam2.config, tiny_sam2.checkpoint, video=True), source)
    run = TrackRun()
    frames = list(track(reasoner, source, "the red square", tracker, key=5, run=run, reask=False))
    assert [f.position for f in frames] == [4, 3, 2, 1, 0] + list(range(5, 14))
    assert all(set(f.masks) == {1} and f.masks[1].shape == (H, W) for f in frames)
    (ask,) = run.asks
    assert ask.position == 5 and ask.reason == "key frame" and ask.new_tracks == [1]
    assert ask.answers[0]["box"] == to_original(RED[1]) and ask.answers[0]["label"] == "red square"
    assert frames[5].position == 5 and not frames[5].lost  # the key frame opens the forward pass
    # the Python API: the same frames through reasoner.track
    video = build_model(tiny_sam2.config, tiny_sam2.checkpoint, video=True)
    again = list(reasoner.track(tmp_path / "clip", "the red square", video_segmenter=video, key=5, reask=False))
    assert [f.position for f in again] == [f.position for f in frames]
    assert all((a.masks[1] == b.masks[1]).all() for a, b in zip(again, frames))


class ScriptedTracker:
    """A stand-in for SAM 2's memory whose masks and object scores are written out per frame, so the run's
    decisions (when a track is lost, what the next answer does) can be checked by hand."""

    def __init__(self, script):
        self.script, self.prompts = script, []

    def prompt(self, frame, track, box=None, point=None):
        self.prompts.append((frame, track))
        return self.script(frame, track, self.prompts)[0]

    def propagate(self, start, *, reverse=False, max_frames=None):
        ids = sorted({t for _, t in self.prompts})
        for frame in (range(start, -1, -1) if reverse else range(start, 30)):
            yield frame, {t: self.script(frame, t, self.prompts) for t in ids}


def _box_mask(x0, y0, x1, y1):
    mask = np.zeros((H, W), bool)
    mask[y0:y1, x0:x1] = True
    return mask


@pytest.mark.timeout(300)
def test_a_lost_track_makes_the_policy_answer_again_and_its_objects_resume_or_start_tracks(tiny_segmenter, tmp_path):
    source = FrameSource(_clip(tmp_path / "clip", 30))
    red = _box_mask(*to_original(RED[1]))

    def script(frame, track, prompts):
        if track == 1 and 12 <= frame and not any(f == 14 and t == 1 for f, t in prompts):
            return red, -2.0                     # the object score drops from frame 12 on, until re-prompted
        return (red if track == 1 else _box_mask(*to_original(BLUE[1]))), 3.0

    # the key frame answers the red square; the second ask (frame 14) the red square and the blue circle
    policy = ReplayPolicy([answer(RED)])
    reasoner = LocalReasoner(policy, tiny_segmenter, frame="pixels-112", **RANDOM_SAM)
    run = TrackRun()
    frames = []
    for result in track(reasoner, source, "the red square", ScriptedTracker(script), key=0, run=run):
        frames.append(result)
        policy.texts = [answer(RED, BLUE)]
    assert [a.position for a in run.asks] == [0, 14]          # lost after 3 frames under 0 (12, 13, 14)
    assert "object score under 0.0 for 3 frames" in run.asks[1].reason
    assert run.asks[1].resumed_tracks == [1] and run.asks[1].new_tracks == [2]
    last = {}
    for f in frames:
        last[f.position] = f                                  # frame 14 comes twice: the second one counts
    assert sorted(last) == list(range(30))
    assert last[13].masks[1].any() is not False and last[14].masks[1].any() and set(last[20].masks) == {1, 2}
    assert [f.position for f in frames].count(14) == 2 and frames[14].lost == [1]


@pytest.mark.timeout(300)
def test_a_track_lost_soon_after_an_ask_is_asked_for_later_and_the_wait_doubles_while_nothing_is_found(
        tiny_segmenter, tmp_path):
    """The red square leaves the frame on frame 2 and is back from frame 12. Lost on frame 4 (three frames
    under 0), too soon after the key frame's ask; asked for on frame 5 (the wait of 5 frames is over; the
    policy sees nothing), then 10 frames later on frame 15, where it is back and its track resumes."""
    source = FrameSource(_clip(tmp_path / "clip", 30))
    red = _box_mask(*to_original(RED[1]))

    def script(frame, track, prompts):
        if 2 <= frame < 12 or (frame >= 12 and not any(f >= 12 for f, _ in prompts)):
            return np.zeros_like(red), -2.0      # gone; back from frame 12, seen once prompted there
        return red, 3.0

    policy = ReplayPolicy([answer(RED)])
    reasoner = LocalReasoner(policy, tiny_segmenter, frame="pixels-112", **RANDOM_SAM)
    run, last = TrackRun(), {}
    for result in track(reasoner, source, "the red square", ScriptedTracker(script), key=0, run=run):
        last[result.position] = result
        policy.texts = [answer(RED) if result.position >= 12 else "<think> nothing </think> <answer>[]</answer>"]
    assert [a.position for a in run.asks] == [0, 5, 15]
    assert run.asks[1].resumed_tracks == [] and "track 1: object score under 0.0 for 3 frames (frame 4)" in run.asks[1].reason
    assert run.asks[2].resumed_tracks == [1] and run.asks[2].new_tracks == []
    assert sorted(last) == list(range(30))
    assert [p for p in range(30) if last[p].masks[1].any()] == [0, 1] + list(range(15, 30))
