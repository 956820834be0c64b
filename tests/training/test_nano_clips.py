"""The nano world in motion (training/nano/clips.py): clips fixed by their index, a camera that pans over a
still background, objects whose masks are the visible pixels on every frame, and the ReVOS layout read back
by the engine's reader."""

import numpy as np

from engine.data.video import open_video_dataset
from training.nano.clips import make_clip, write_revos


def test_a_clip_is_fixed_by_its_index_and_its_camera_pans_over_a_still_world():
    clip = make_clip(3, frames=9, pan=16)
    again = make_clip(3, frames=9, pan=16)
    assert all((a == b).all() for a, b in zip(clip.frames, again.frames)) and clip.query == again.query
    assert len(clip.frames) == len(clip.masks) == 9 and clip.frames[0].shape == (224, 224, 3)
    # frame 8 looks 16 px further right: where no object covers either frame, its pixel at x is frame 0's at x + 16
    covered0 = np.logical_or.reduce(list(clip.masks[0].values()))
    covered8 = np.logical_or.reduce(list(clip.masks[8].values()))
    free = ~covered0[:, 16:] & ~covered8[:, :-16]
    assert free.mean() > 0.3
    assert (clip.frames[8][:, :-16][free] == clip.frames[0][:, 16:][free]).all()
    for masks in clip.masks:  # visible masks never overlap: a later object hides an earlier one
        stacked = np.stack(list(masks.values())).astype(int)
        assert stacked.sum(0).max() <= 1
    assert clip.targets and all(clip.masks[0][t].any() for t in clip.targets)


def test_clips_written_as_revos_read_back_with_their_targets(tmp_path):
    clips = [make_clip(i, frames=5, pan=8) for i in range(3)]
    data = open_video_dataset("revos", write_revos(tmp_path / "clips", clips))
    assert len(data) == 3
    for clip, expression in zip(clips, data):
        assert expression.query == clip.query and len(expression) == 5
        assert expression.kind == ("referring" if clip.reasoning_type == "referring" else "reasoning")
        for t in range(5):
            target = np.logical_or.reduce([clip.masks[t][i] for i in clip.targets])
            assert (expression.load_mask(t) == target).all()
