"""The bundle line of the app names what `star-train adapt` measured for a bundle it made."""

from desktop.worker import adapted_note


def test_an_adapted_bundle_shows_its_before_and_after():
    adapted = {"from_bundle": "nano", "data": "tiles", "before_giou": 0.194, "after_giou": 0.301, "held_out": 774,
               "steps": 200}
    assert adapted_note(adapted) == " · adapted from nano on tiles: held-out gIoU 0.19 → 0.30 (774 samples)"
    assert adapted_note(None) == "" and adapted_note({"from_bundle": "nano"}) == ""  # hand-edited: nothing said
