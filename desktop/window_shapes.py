"""Hand editing in the main window (a mixin of MainWindow), as labelme does it: the edit tool selects an
object where it is pressed, drags it or its vertices (Alt+click on an edge adds a vertex, Alt+Shift+click
deletes one), and the polygon and rectangle tools draw a new object, whose label is asked for as labelme
asks. Each gesture is one undo step, autosaved like every edit."""

from __future__ import annotations

from .annotation import AnnotatedObject, shapes_mask
from .shapes import polygon_shape, rectangle_shape


class ShapeEditingMixin:
    def show_editable(self) -> None:
        """The edit tool shows the selected object's shapes with their vertices (traced from a SAM mask once
        per object: a 24 MP mask takes a moment to trace)."""
        current = self.annotation.current if self.annotation is not None else None
        if self.canvas.tool != "edit" or current is None:
            self.canvas.set_editable([])
            return
        cached = getattr(self, "_traced", None)
        if cached is None or cached[0] is not current:
            self._traced = (current, current.editable_shapes())
        self.canvas.set_editable(self._traced[1])

    def object_at(self, x: float, y: float) -> int | None:
        """The object under image pixel (x, y): the selected one if it covers it, else the topmost."""
        ann = self.annotation
        col, row = int(x), int(y)
        if ann is None or not (0 <= row < ann.size[1] and 0 <= col < ann.size[0]):
            return None
        if ann.current is not None and ann.current.mask[row, col]:
            return ann.selected
        for index in range(len(ann.objects) - 1, -1, -1):
            if ann.objects[index].mask[row, col]:
                return index
        return None

    def on_canvas_pick(self, x: float, y: float) -> None:
        if self.annotation is not None:
            index = self.object_at(x, y)
            if index != self.annotation.selected:
                self.select_object(-1 if index is None else index)

    def _hand_edit(self, change, what: str) -> None:
        """Apply `change` (selected object -> edited object) as one undo step, unless it empties the object."""
        if not self._can_edit() or self.annotation.current is None:
            self.show_annotation()  # the canvas shows the object as it still is
            return
        edited = change(self.annotation.current)
        if not edited.mask.any():
            self.show_annotation()
            self.stage.setText(f"Not {what}: the object would cover no pixel.")
            return
        self.annotation.set_object(self.annotation.selected, edited)
        self._edited()
        self.stage.setText(f"{what.capitalize()} by hand (Ctrl+Z undoes it).")

    def on_shapes_edited(self, shapes: list) -> None:
        self._hand_edit(lambda obj: obj.with_shapes(shapes, self.annotation.size), "reshaped")

    def on_object_moved(self, dx: float, dy: float) -> None:
        self._hand_edit(lambda obj: obj.moved(dx, dy, self.annotation.size), "moved")

    def on_shape_drawn(self, kind: str, points: list) -> None:
        """A polygon or rectangle drawn by hand becomes a new object, under the label asked for."""
        if not self._can_edit():
            return
        (x1, y1), (x2, y2) = points[0], points[-1]
        shape = rectangle_shape("", x1, y1, x2, y2) if kind == "rectangle" else polygon_shape("", points)
        w, h = self.annotation.size
        mask = shapes_mask([shape], h, w)
        if not mask.any():
            self.stage.setText(f"The {kind} covers no pixel: nothing was added.")
            return
        label = self.ask_label()
        self.canvas.setFocus()  # the canvas keeps the single-key shortcuts after the dialog
        if label is None:
            self.stage.setText(f"No label given: the {kind} was not added.")
            return
        self.annotation.add_object(AnnotatedObject(label, mask, shapes=((None, {**shape, "label": label}),)))
        self._edited()
        self.stage.setText(f"Added “{label}”, a {kind} drawn by hand.")
