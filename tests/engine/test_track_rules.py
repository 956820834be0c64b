"""When a track is lost and which new object continues which track (engine/track/tracks.py), by hand."""

import numpy as np

from engine.track.tracks import LossRule, Track, box_iou, mask_box, mask_iou, match_objects


def _box(x0, y0, x1, y1, shape=(40, 60)):
    mask = np.zeros(shape, bool)
    mask[y0:y1, x0:x1] = True
    return mask


def test_a_low_object_score_for_three_frames_in_a_row_loses_the_track():
    track, rule = Track(1), LossRule()
    mask = _box(10, 10, 20, 20)
    scores = [5.0, -1.0, -2.0, 3.0, -1.0, -1.0, -1.0]  # the run is broken at frame 3, lost at frame 6
    lost = [track.update(frame, mask, score, rule) for frame, score in enumerate(scores)]
    assert lost == [False, False, False, False, False, False, True]
    assert track.lost and track.lost_at == 6 and "3 frames" in track.reason
    assert track.update(7, mask, 5.0, rule) is False  # once lost, it stays lost until resumed
    track.resume()
    assert not track.lost and track.low_run == 0 and track.last_mask is None


def test_a_mask_that_jumps_loses_the_track_but_entering_or_leaving_does_not():
    rule = LossRule()
    small, moved, huge = _box(10, 10, 20, 20), _box(40, 25, 50, 35), _box(0, 0, 60, 40)
    assert rule.jumped(small, moved)                    # no overlap: IoU 0 < 0.1
    assert rule.jumped(small, huge)                     # 100 -> 2400 pixels: x24 > 4
    assert not rule.jumped(small, _box(11, 10, 21, 20))  # one pixel to the right: IoU 90 / 110
    assert not rule.jumped(small, np.zeros((40, 60), bool)) and not rule.jumped(None, small)
    track = Track(2)
    assert not track.update(0, small, 4.0, rule) and track.update(1, moved, 4.0, rule)
    assert track.reason == "mask jumped"


def test_new_objects_continue_the_tracks_they_overlap_best_each_track_once():
    a, b = Track(1, last_mask=_box(0, 0, 20, 20)), Track(2, last_mask=_box(30, 0, 50, 20))  # boxes (0,0,19,19), (30,0,49,19)
    near_a, near_b, elsewhere = (2, 0, 21, 19), (31, 1, 50, 20), (10, 25, 29, 39)
    assert box_iou(near_a, mask_box(a.last_mask)) == 360 / 440   # 18 x 20 shared of 20 x 20 twice
    assert match_objects([a, b], [near_b, elsewhere, near_a]) == [2, None, 1]
    # two new boxes over one track: the better overlap continues it, the other is new; no box, no match
    assert match_objects([a], [(5, 0, 24, 19), near_a, None]) == [None, 1, None]
    assert mask_iou(_box(0, 0, 20, 20), _box(10, 0, 30, 20)) == 200 / 600
