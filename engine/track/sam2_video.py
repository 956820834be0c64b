"""SAM 2's video memory following objects through frames read on demand: sam2's own `SAM2VideoPredictor`
(its memory attention, memory encoder and object pointers), given a state whose frames come from a
`FrameSource` one at a time instead of a whole clip decoded up front.

`SAM2VideoPredictor.init_state` loads every frame of a clip as a float tensor at the model's input size
(12 MB a frame at 1024 px: 3.6 GB for 300 frames); `open_state` builds the same state with `LazyFrames`,
which resizes and normalizes a frame when the predictor asks for it and keeps only the last few, and
`forget_old_frames` drops the per-frame outputs that the memory can no longer reach, so memory stays flat
over a long clip. The predictor's own code does everything else.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Iterator

import numpy as np

from ..frames import FrameSource

IMAGE_MEAN = (0.485, 0.456, 0.406)  # what sam2's video loader normalizes frames with
IMAGE_STD = (0.229, 0.224, 0.225)


class LazyFrames:
    """The predictor's `images`: frame i as sam2's video loader would make it (resized to the model's square
    input with PIL's default filter, scaled to 0..1, normalized), made when asked for; the last `keep` kept."""

    def __init__(self, source: FrameSource, image_size: int, keep: int = 4):
        import torch

        self.source, self.image_size, self.keep = source, image_size, keep
        self._cache: OrderedDict[int, object] = OrderedDict()
        self._mean = torch.tensor(IMAGE_MEAN, dtype=torch.float32)[:, None, None]
        self._std = torch.tensor(IMAGE_STD, dtype=torch.float32)[:, None, None]
        self.loads = 0  # frames decoded so far (a frame asked for twice in a row is decoded once)
        first = source.frame(0).rgb
        self.height, self.width = first.shape[:2]

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, index: int):
        import torch
        from PIL import Image

        if index in self._cache:
            self._cache.move_to_end(index)
            return self._cache[index]
        rgb = self.source.frame(index).rgb
        resized = np.asarray(Image.fromarray(rgb).resize((self.image_size, self.image_size)))
        tensor = (torch.from_numpy(resized / 255.0).permute(2, 0, 1).float() - self._mean) / self._std
        self.loads += 1
        self._cache[index] = tensor
        while len(self._cache) > self.keep:
            self._cache.popitem(last=False)
        return tensor


def open_state(predictor, frames: LazyFrames, *, offload_state_to_cpu: bool = True) -> dict:
    """The inference state `predictor.init_state` makes, with `frames` read on demand (sam2 1.1.0's keys)."""
    import torch

    device = predictor.device
    state = {
        "images": frames, "num_frames": len(frames), "offload_video_to_cpu": True,
        "offload_state_to_cpu": offload_state_to_cpu, "video_height": frames.height, "video_width": frames.width,
        "device": device, "storage_device": torch.device("cpu") if offload_state_to_cpu else device,
        "point_inputs_per_obj": {}, "mask_inputs_per_obj": {}, "cached_features": {}, "constants": {},
        "obj_id_to_idx": OrderedDict(), "obj_idx_to_id": OrderedDict(), "obj_ids": [],
        "output_dict_per_obj": {}, "temp_output_dict_per_obj": {}, "frames_tracked_per_obj": {},
    }
    with torch.inference_mode():
        predictor._get_image_feature(state, frame_idx=0, batch_size=1)  # as init_state warms up on frame 0
    return state


def forget_old_frames(state: dict, frame: int, reach: int, *, reverse: bool = False) -> int:
    """Drop the non-conditioning outputs of frames more than `reach` frames behind `frame` in the direction
    of travel (the memory attends to the last `num_maskmem - 1` of them only); the prompted frames stay.
    Returns how many were dropped."""
    dropped = 0
    for per_obj in state["output_dict_per_obj"].values():
        outputs = per_obj["non_cond_frame_outputs"]
        old = [t for t in outputs if (t > frame + reach if reverse else t < frame - reach)]
        for t in old:
            del outputs[t]
        dropped += len(old)
    return dropped


@contextlib.contextmanager
def _quiet_progress():
    """sam2 wraps its propagation in a tqdm bar of its own; the command shows one bar, its own."""
    import sam2.sam2_video_predictor as module

    original = module.tqdm
    module.tqdm = lambda iterable, *args, **kwargs: iterable
    try:
        yield
    finally:
        module.tqdm = original


class VideoMemoryTracker:
    """Objects prompted on a key frame (a box and a point each, in the frame's pixels), followed forward and
    backward by the predictor's memory. Each step gives, per track id, the mask (bool H x W at the frame's
    size) and SAM 2's object score logit (> 0: the object is in the frame)."""

    def __init__(self, predictor, source: FrameSource, *, keep_frames: int = 4):
        self.predictor = predictor
        self.frames = LazyFrames(source, predictor.image_size, keep=keep_frames)
        self.state = open_state(predictor, self.frames)
        # the memory attends to the last num_maskmem - 1 frames, the object pointers to the last
        # max_obj_ptrs_in_encoder - 1: older outputs are never read again
        self.reach = max(predictor.num_maskmem, predictor.max_obj_ptrs_in_encoder) + 1

    def prompt(self, frame: int, track: int, box=None, point=None) -> np.ndarray:
        """Prompt track `track` on `frame` with a box (x1, y1, x2, y2) and / or a point (x, y); returns its mask
        there."""
        import torch

        points = labels = None
        if point is not None:
            points, labels = np.asarray([point], np.float32), np.asarray([1], np.int32)
        with torch.inference_mode():
            _, ids, logits = self.predictor.add_new_points_or_box(
                self.state, frame_idx=frame, obj_id=track, points=points, labels=labels,
                box=None if box is None else np.asarray(box, np.float32))
        return (logits[list(ids).index(track), 0] > 0).cpu().numpy()

    def prompt_clicks(self, frame: int, track: int, clicks: list[tuple[float, float, bool]]) -> np.ndarray:
        """An annotator's clicks for track `track` on `frame` (x, y in the frame's pixels; True adds, False
        removes), replacing the clicks given there before (sam2 refines the frame's mask from them; a track not
        seen before starts there); returns its mask there. Propagating from `frame` carries the change on."""
        import torch

        points = np.asarray([(x, y) for x, y, _ in clicks], np.float32)
        labels = np.asarray([1 if positive else 0 for _, _, positive in clicks], np.int32)
        with torch.inference_mode():
            _, ids, logits = self.predictor.add_new_points_or_box(self.state, frame_idx=frame, obj_id=track,
                                                                  points=points, labels=labels, clear_old_points=True)
        return (logits[list(ids).index(track), 0] > 0).cpu().numpy()

    def prompt_mask(self, frame: int, track: int, mask: np.ndarray) -> np.ndarray:
        """Prompt track `track` on `frame` with a whole mask (bool H x W at the frame's size), as a resumed run
        re-seeds its tracks from the last finished frame; returns SAM 2's mask there."""
        import torch

        with torch.inference_mode():
            _, ids, logits = self.predictor.add_new_mask(self.state, frame_idx=frame, obj_id=track,
                                                         mask=np.asarray(mask, bool))
        return (logits[list(ids).index(track), 0] > 0).cpu().numpy()

    def _score(self, track: int, frame: int) -> float:
        index = self.state["obj_id_to_idx"][track]
        outputs = self.state["output_dict_per_obj"][index]
        out = outputs["cond_frame_outputs"].get(frame) or outputs["non_cond_frame_outputs"].get(frame)
        score = None if out is None else out.get("object_score_logits")
        return float(score.reshape(-1)[0]) if score is not None else 0.0

    def propagate(self, start: int, *, reverse: bool = False,
                  max_frames: int | None = None) -> Iterator[tuple[int, dict[int, tuple[np.ndarray, float]]]]:
        """(frame, {track: (mask, object score)}) for each frame from `start` on (or back), as they are made.
        From a key frame inside a clip, go back first and then forward, as `track` does: a backward pass
        reads the forward pass's outputs near the key frame as memory, which a forward pass before it would
        already have dropped."""
        import torch

        with _quiet_progress(), torch.inference_mode():
            for frame, ids, logits in self.predictor.propagate_in_video(
                    self.state, start_frame_idx=start, max_frame_num_to_track=max_frames, reverse=reverse):
                masks = (logits[:, 0] > 0).cpu().numpy()
                yield frame, {int(t): (masks[i], self._score(int(t), frame)) for i, t in enumerate(ids)}
                forget_old_frames(self.state, frame, self.reach, reverse=reverse)

    def reset(self) -> None:
        """Forget every prompt and track (the frames stay)."""
        self.predictor.reset_state(self.state)
