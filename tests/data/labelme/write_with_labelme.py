"""Writes scene.json in this folder with labelme 7.9.1's own writer (`labelme._label_file.write_label_file`):
the file the round-trip tests load, edit in one shape and compare field by field. Run once, with labelme 7.9.1
installed (Python 3.12):  python tests/data/labelme/write_with_labelme.py"""

from pathlib import Path

from labelme._label_file import Annotation, write_label_file
from labelme._shape._model import ShapeDict

HERE = Path(__file__).resolve().parent


def shape(label, shape_type, points, *, group_id=None, description="", flags=None, **other):
    return ShapeDict(label=label, points=points, shape_type=shape_type, flags=flags or {}, description=description,
                     group_id=group_id, mask=None, locked=False, other_data=other)


shapes = [
    shape("red cup", "rectangle", [[140.0, 103.0], [219.0, 179.0]], description="drawn by hand in labelme",
          flags={"verified": True}),
    shape("tree", "polygon", [[10.0, 10.0], [60.0, 12.0], [55.0, 70.0], [12.0, 60.0]], group_id=4),
    shape("tree", "polygon", [[70.0, 20.0], [90.0, 20.0], [90.0, 40.0]], group_id=4, description="second part"),
    shape("sun", "circle", [[180.0, 40.0], [195.0, 40.0]]),
    shape("handle", "point", [[200.0, 140.0]]),
    shape("horizon", "linestrip", [[0.0, 100.0], [100.0, 98.0], [223.0, 101.0]]),
]
annotation = Annotation(image_path="scene.png", image_data=b"", shapes=shapes, flags={"needs_review": False},
                        other_data={"reviewer": "ana", "review_state": {"round": 2, "accepted": ["tree"]}})
write_label_file(filename=str(HERE / "scene.json"), annotation=annotation, image_height=224, image_width=224,
                 save_image_data=False)
print(HERE / "scene.json")
