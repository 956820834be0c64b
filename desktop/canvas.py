"""The image view: the picture, the mask overlay, the answer's boxes and points, zoom and pan, and the
tools that draw on it (SAM clicks and boxes; labelme's hand tools: edit a shape and its vertices, draw a
polygon or a rectangle). The canvas only reports gestures as signals in image pixels; the window decides
what they change.

Scene coordinates are the ORIGINAL image's pixels whatever is displayed: an image larger than
DISPLAY_MAX on a side is shown downscaled (the pixmap item is scaled back up), and so are the overlays,
while every mask the app keeps and exports stays at full resolution."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QImage, QPainter, QPainterPath, QPen, QPixmap, QPolygonF
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPixmapItem, QGraphicsScene, QGraphicsView

from engine.results import mask_outline

from .shapes import delete_vertex, handles, insert_vertex, move_vertex, nearest_edge, nearest_vertex, outline

DISPLAY_MAX = 4096
ZOOM_STEP = 1.25
# pan: drag moves the image; click: SAM click (left adds, right removes); box: drag a SAM box; edit: drag a
# shape or its vertices (labelme's edit mode); polygon / rectangle: draw one by hand.
TOOLS = ("pan", "click", "box", "edit", "polygon", "rectangle")
MIN_BOX = 2.0  # a drag shorter than this (image pixels) is a click, not a box
GRAB_PX = 8.0  # screen pixels within which a vertex, an edge or a polygon's first point is hit
EDIT_COLOUR = QColor(255, 255, 255)
DRAW_COLOUR = QColor(40, 220, 90)


def cosmetic_pen(colour: QColor, width: float = 2.0, style=Qt.PenStyle.SolidLine) -> QPen:
    """A pen one width on screen at any zoom."""
    pen = QPen(colour, 0, style)
    pen.setCosmetic(True)
    pen.setWidthF(width)
    return pen


def rgb_to_qimage(rgb: np.ndarray) -> QImage:
    h, w = rgb.shape[:2]
    data = np.ascontiguousarray(rgb)
    return QImage(data.data, w, h, 3 * w, QImage.Format.Format_RGB888).copy()  # copy: own the pixels


def mask_to_qimage(mask: np.ndarray, colour: QColor, alpha: float) -> QImage:
    """A premultiplied-free ARGB image: the colour where the mask is set, transparent elsewhere, and the
    mask's outline at full strength (so a mask stays visible at low opacity or on a similar colour)."""
    h, w = mask.shape
    argb = np.zeros((h, w, 4), np.uint8)
    bgr = (colour.blue(), colour.green(), colour.red())
    argb[mask] = (*bgr, int(round(255 * alpha)))  # BGRA in memory
    argb[mask_outline(mask)] = (*bgr, 255)
    return QImage(argb.data, w, h, 4 * w, QImage.Format.Format_ARGB32).copy()


def labels_to_qimage(labels: np.ndarray, colours: np.ndarray, alpha: float) -> QImage:
    """An ARGB image of a label image: object k in colours[k] (RGB) at `alpha`, each object's outline opaque."""
    h, w = labels.shape
    argb = np.zeros((h, w, 4), np.uint8)
    for k in np.unique(labels[labels > 0]):
        mask = labels == k
        r, g, b = (int(c) for c in colours[k])
        argb[mask] = (b, g, r, int(round(255 * alpha)))  # BGRA in memory
        argb[mask_outline(mask)] = (b, g, r, 255)
    return QImage(argb.data, w, h, 4 * w, QImage.Format.Format_ARGB32).copy()


def display_factor(width: int, height: int, limit: int = DISPLAY_MAX) -> int:
    """The integer downscale that brings the longer side within `limit` (1 = full size)."""
    return max(1, -(-max(width, height) // limit))


class Canvas(QGraphicsView):
    clicked = Signal(float, float, bool)  # image x, y; True adds the spot (left button), False removes it (right)
    box_drawn = Signal(float, float, float, float)  # x1, y1, x2, y2 in image pixels
    picked = Signal(float, float)  # edit tool: a press at (x, y) that is no handle (the window selects there)
    shapes_edited = Signal(list)  # edit tool: the edited shapes' new forms (a vertex moved, added or deleted)
    moved = Signal(float, float)  # edit tool: the selected object dragged by (dx, dy)
    drawn = Signal(str, list)  # "polygon" / "rectangle" and its points, drawn by hand

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setScene(QGraphicsScene(self))
        self.setRenderHints(QPainter.RenderHint.Antialiasing | QPainter.RenderHint.SmoothPixmapTransform)
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag)
        self.setTransformationAnchor(QGraphicsView.ViewportAnchor.AnchorUnderMouse)
        self.setBackgroundBrush(QBrush(QColor(40, 40, 44)))
        self.image_item: QGraphicsPixmapItem | None = None
        self.mask_item: QGraphicsPixmapItem | None = None
        self.highlight_item: QGraphicsPixmapItem | None = None
        self.selection_item: QGraphicsPixmapItem | None = None
        self.marks: list[QGraphicsItem] = []
        self.factor = 1
        self.colour = QColor("#ff285a")
        self.opacity = 0.5
        self._mask: np.ndarray | None = None
        self.auto_fit = True  # keep the image fitted to the view until the person zooms
        self.tool = "pan"
        self.prompt_marks: list[QGraphicsItem] = []
        self._drag_start: QPointF | None = None
        self._drag_item: QGraphicsItem | None = None
        self.edit_shapes: list[dict] = []  # the selected object's shapes, as the edit tool shows them
        self._edit_items: list[list[QGraphicsItem]] = []  # per shape: its outline, then one item per handle
        self._grab: tuple | None = None  # ("vertex", shape, k) or ("move", start) while a drag edits
        self._grab_changed = False  # whether the grabbed vertex has moved (or was just added)
        self._draft: list[QPointF] = []  # the polygon being drawn
        self._draft_item: QGraphicsItem | None = None
        self.setMinimumSize(320, 240)

    # ---- content -----------------------------------------------------------------------------------
    def set_image(self, rgb: np.ndarray, *, keep_view: bool = False) -> None:
        """Show `rgb` (everything drawn over the last image cleared); `keep_view`: a frame of the same size as
        the last keeps the zoom and position (scrubbing a video)."""
        same_size = self.image_item is not None and self.sceneRect().size() == QRectF(0, 0, rgb.shape[1], rgb.shape[0]).size()
        self.scene().clear()
        self.mask_item = self.highlight_item = self.selection_item = self._drag_item = self._draft_item = None
        self.marks, self.prompt_marks = [], []
        self.edit_shapes, self._edit_items, self._grab, self._draft, self._drag_start = [], [], None, [], None
        self._mask = None
        h, w = rgb.shape[:2]
        self.factor = display_factor(w, h)
        shown = rgb[::self.factor, ::self.factor] if self.factor > 1 else rgb
        self.image_item = self.scene().addPixmap(QPixmap.fromImage(rgb_to_qimage(shown)))
        self.image_item.setScale(self.factor)
        self.image_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().setSceneRect(QRectF(0, 0, w, h))
        if keep_view and same_size:
            return
        self.auto_fit = True
        self.fit()

    def _mask_pixmap_item(self, mask: np.ndarray, colour: QColor, alpha: float, z: float) -> QGraphicsPixmapItem:
        shown = mask[::self.factor, ::self.factor] if self.factor > 1 else mask
        item = self.scene().addPixmap(QPixmap.fromImage(mask_to_qimage(shown, colour, alpha)))
        item.setScale(self.factor)
        item.setZValue(z)
        return item

    def set_mask(self, mask: np.ndarray | None) -> None:
        """The final mask, drawn with the current colour and opacity (None clears it)."""
        self._mask = mask
        if self.mask_item is not None:
            self.scene().removeItem(self.mask_item)
            self.mask_item = None
        if mask is not None and mask.any():
            self.mask_item = self._mask_pixmap_item(mask, self.colour, self.opacity, 1)

    def set_labels(self, labels: np.ndarray | None, colours: np.ndarray) -> None:
        """A label image (0 nothing, k object k) drawn in `colours[k]` (RGB rows) at the current opacity, in
        the final mask's place (None clears it): a video frame's tracks."""
        self._mask = None
        if self.mask_item is not None:
            self.scene().removeItem(self.mask_item)
            self.mask_item = None
        if labels is None or not labels.any():
            return
        shown = labels[::self.factor, ::self.factor] if self.factor > 1 else labels
        item = self.scene().addPixmap(QPixmap.fromImage(labels_to_qimage(shown, colours, self.opacity)))
        item.setScale(self.factor)
        item.setZValue(1)
        self.mask_item = item

    def set_style(self, colour: QColor | None = None, opacity: float | None = None) -> None:
        if colour is not None:
            self.colour = QColor(colour)
        if opacity is not None:
            self.opacity = float(opacity)
        self.set_mask(self._mask)

    def set_mask_visible(self, visible: bool) -> None:
        if self.mask_item is not None:
            self.mask_item.setVisible(visible)

    def highlight(self, mask: np.ndarray | None) -> None:
        """A sample's or a cluster's mask, in a second colour above the final mask (None clears it)."""
        if self.highlight_item is not None:
            self.scene().removeItem(self.highlight_item)
            self.highlight_item = None
        if mask is not None and mask.any():
            self.highlight_item = self._mask_pixmap_item(mask, QColor(40, 160, 255), 0.55, 2)

    def set_selection(self, mask: np.ndarray | None) -> None:
        """The selected object's outline (white, above the mask; None clears it)."""
        if self.selection_item is not None:
            self.scene().removeItem(self.selection_item)
            self.selection_item = None
        if mask is not None and mask.any():
            self.selection_item = self._mask_pixmap_item(mask, QColor(255, 255, 255), 0.0, 1.5)

    def set_targets(self, targets: list[dict]) -> None:
        """Boxes and points of the answer(s) shown: [{"box": [x1,y1,x2,y2], "point": [x,y], "label": ...}]."""
        for item in self.marks:
            self.scene().removeItem(item)
        self.marks = []
        pen = QPen(QColor(255, 220, 0), 0)  # cosmetic: one screen pixel at any zoom
        pen.setCosmetic(True)
        pen.setWidthF(2.0)
        for t in targets:
            x1, y1, x2, y2 = t["box"]
            rect = self.scene().addRect(QRectF(QPointF(x1, y1), QPointF(x2, y2)), pen)
            rect.setZValue(3)
            px, py = t["point"]
            r = max(3.0, 0.006 * max(self.sceneRect().width(), self.sceneRect().height()))
            dot = self.scene().addEllipse(QRectF(px - r, py - r, 2 * r, 2 * r), pen, QBrush(QColor(255, 220, 0)))
            dot.setZValue(3)
            self.marks += [rect, dot]
            if t.get("label"):
                text = self.scene().addSimpleText(t["label"])
                text.setBrush(QBrush(QColor(255, 220, 0)))
                text.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)
                text.setPos(x1, y1)
                text.setZValue(3)
                self.marks.append(text)

    def set_prompt(self, clicks, box) -> None:
        """The selected object's SAM prompt: clicks (x, y, 1 adds / 0 removes) as green / red dots, the box dashed."""
        for item in self.prompt_marks:
            self.scene().removeItem(item)
        self.prompt_marks = []
        r = max(3.0, 0.008 * max(self.sceneRect().width(), self.sceneRect().height()))
        for x, y, positive in clicks:
            colour = QColor(40, 220, 90) if positive else QColor(255, 60, 60)
            pen = QPen(QColor(255, 255, 255), 0)
            pen.setCosmetic(True)
            dot = self.scene().addEllipse(QRectF(x - r, y - r, 2 * r, 2 * r), pen, QBrush(colour))
            dot.setZValue(5)
            self.prompt_marks.append(dot)
        if box is not None:
            pen = QPen(QColor(40, 220, 90), 0, Qt.PenStyle.DashLine)
            pen.setCosmetic(True)
            pen.setWidthF(2.0)
            rect = self.scene().addRect(QRectF(QPointF(box[0], box[1]), QPointF(box[2], box[3])), pen)
            rect.setZValue(5)
            self.prompt_marks.append(rect)

    # ---- the edit tool's shapes ------------------------------------------------------------------------
    def set_editable(self, shapes: list[dict]) -> None:
        """The shapes the edit tool shows with their vertices (the selected object's; [] shows none)."""
        for items in self._edit_items:
            for item in items:
                self.scene().removeItem(item)
        self._edit_items = []
        self._grab = None  # a drag in progress edited shapes that are no longer shown
        self.edit_shapes = [dict(shape) for shape in shapes]
        for shape in self.edit_shapes:
            line = self.scene().addPolygon(QPolygonF([QPointF(x, y) for x, y in outline(shape)]),
                                           cosmetic_pen(EDIT_COLOUR, 1.5))
            line.setZValue(7)
            items = [line]
            for x, y in handles(shape):
                dot = self.scene().addRect(QRectF(-4, -4, 8, 8), cosmetic_pen(QColor(0, 0, 0), 1),
                                           QBrush(EDIT_COLOUR))
                dot.setFlag(QGraphicsItem.GraphicsItemFlag.ItemIgnoresTransformations)  # 8 px at any zoom
                dot.setPos(x, y)
                dot.setZValue(8)
                items.append(dot)
            self._edit_items.append(items)

    def _show_shape(self, s: int, offset: QPointF = QPointF(0, 0)) -> None:
        """Shape s's outline and handles where its points now are (plus `offset` while a move drags)."""
        shape = self.edit_shapes[s]
        line, *dots = self._edit_items[s]
        line.setPolygon(QPolygonF([QPointF(x, y) for x, y in outline(shape)]))
        line.setPos(offset)
        for dot, (x, y) in zip(dots, handles(shape)):
            dot.setPos(x + offset.x(), y + offset.y())

    def _grab_distance(self) -> float:
        return GRAB_PX / max(self.zoom_level(), 1e-6)

    def _inside_editable(self, pos: QPointF) -> bool:
        return any(QPolygonF([QPointF(x, y) for x, y in outline(shape)]).containsPoint(pos, Qt.FillRule.OddEvenFill)
                   for shape in self.edit_shapes)

    def _edit_press(self, event, pos: QPointF) -> bool:
        """A press of the edit tool: grab a vertex (Alt+Shift: delete it), Alt on an edge adds a vertex there,
        else select what is under it and grab it to move. False: nothing there (the press pans)."""
        alt = bool(event.modifiers() & Qt.KeyboardModifier.AltModifier)
        shift = bool(event.modifiers() & Qt.KeyboardModifier.ShiftModifier)
        hit = nearest_vertex(self.edit_shapes, pos.x(), pos.y(), self._grab_distance())
        if hit is not None and alt and shift:
            s, k = hit
            changed = delete_vertex(self.edit_shapes[s], k)
            if changed is not None:
                self.shapes_edited.emit(self.edit_shapes[:s] + [changed] + self.edit_shapes[s + 1:])
            return True
        if hit is not None:
            self._grab, self._grab_changed = ("vertex", *hit), False  # a click on a vertex changes nothing
            return True
        edge = nearest_edge(self.edit_shapes, pos.x(), pos.y(), self._grab_distance()) if alt else None
        if edge is not None:
            s, k, x, y = edge
            self.edit_shapes[s] = insert_vertex(self.edit_shapes[s], k, x, y)
            self.set_editable(self.edit_shapes)
            self._grab, self._grab_changed = ("vertex", s, k + 1), True
            return True
        self.picked.emit(pos.x(), pos.y())  # the window selects the object there and shows its shapes
        if self._inside_editable(pos):
            self._grab = ("move", pos)
            return True
        return False

    def _edit_drag(self, pos: QPointF) -> None:
        kind, *where = self._grab
        self._grab_changed = True
        if kind == "vertex":
            s, k = where
            self.edit_shapes[s] = move_vertex(self.edit_shapes[s], k, pos.x(), pos.y())
            self._show_shape(s)
        else:
            for s in range(len(self.edit_shapes)):
                self._show_shape(s, pos - where[0])

    def _edit_release(self, pos: QPointF) -> None:
        kind, *where = self._grab
        self._grab = None
        if kind == "vertex":
            if self._grab_changed:
                self.shapes_edited.emit([dict(shape) for shape in self.edit_shapes])
            return
        delta = pos - where[0]
        if delta.manhattanLength() > 0:
            self.moved.emit(delta.x(), delta.y())

    # ---- drawing a polygon by hand ---------------------------------------------------------------------
    @property
    def drawing(self) -> bool:
        """Whether a polygon or a rectangle is being drawn (Esc cancels it)."""
        return bool(self._draft) or (self.tool == "rectangle" and self._drag_start is not None)

    def _draw_draft(self, cursor: QPointF | None = None) -> None:
        if self._draft_item is not None:
            self.scene().removeItem(self._draft_item)
            self._draft_item = None
        if not self._draft:
            return
        path = QPainterPath(self._draft[0])
        for point in self._draft[1:] + ([cursor] if cursor is not None else []):
            path.lineTo(point)
        self._draft_item = self.scene().addPath(path, cosmetic_pen(DRAW_COLOUR, 2.0))
        self._draft_item.setZValue(6)

    def _polygon_press(self, pos: QPointF) -> None:
        """Each click adds a vertex; a click on the first vertex closes the polygon."""
        if len(self._draft) >= 3 and (pos - self._draft[0]).manhattanLength() <= self._grab_distance():
            self.close_polygon()
            return
        self._draft.append(pos)
        self._draw_draft()

    def close_polygon(self) -> bool:
        """Finish the polygon being drawn (Enter, a double click, or a click on its first vertex)."""
        if len(self._draft) < 3:
            return False
        points = [[p.x(), p.y()] for p in self._draft]
        self.cancel_drawing()
        self.drawn.emit("polygon", points)
        return True

    def undo_point(self) -> None:
        """Backspace while drawing: the last vertex goes."""
        if self._draft:
            self._draft.pop()
            self._draw_draft()

    def cancel_drawing(self) -> None:
        self._draft = []
        self._draw_draft()
        if self.tool == "rectangle" and self._drag_start is not None:
            self._end_drag()

    # ---- tools -------------------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}")
        self.cancel_drawing()
        self.tool = tool
        panning = tool in ("pan", "edit")  # the edit tool pans where a press hits no shape
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag if panning else QGraphicsView.DragMode.NoDrag)
        cursor = {"pan": Qt.CursorShape.OpenHandCursor, "edit": Qt.CursorShape.ArrowCursor}
        self.viewport().setCursor(cursor.get(tool, Qt.CursorShape.CrossCursor))
        if tool != "edit":
            self.set_editable([])

    def _scene_pos(self, event) -> QPointF:
        return self.mapToScene(event.position().toPoint())

    def _inside(self, pos: QPointF) -> bool:
        return self.image_item is not None and self.sceneRect().contains(pos)

    def _start_drag(self, pos: QPointF) -> None:
        self._drag_start = pos
        self._drag_item = self.scene().addRect(QRectF(pos, pos), cosmetic_pen(DRAW_COLOUR, 1.0, Qt.PenStyle.DashLine))
        self._drag_item.setZValue(6)

    def _end_drag(self) -> QPointF:
        """The drag's start; its rectangle is gone."""
        start, self._drag_start = self._drag_start, None
        if self._drag_item is not None:
            self.scene().removeItem(self._drag_item)
            self._drag_item = None
        return start

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        pos = self._scene_pos(event)
        left = event.button() == Qt.MouseButton.LeftButton
        if self.tool == "click" and self._inside(pos) and event.button() in (Qt.MouseButton.LeftButton,
                                                                             Qt.MouseButton.RightButton):
            self.clicked.emit(pos.x(), pos.y(), left)
            event.accept()
            return
        if self.tool == "rectangle" and left and self._drag_start is not None:  # labelme's second click
            self._finish_box(self._clamped(pos))
            event.accept()
            return
        if self.tool in ("box", "rectangle") and self._inside(pos) and left:
            self._start_drag(pos)
            event.accept()
            return
        if self.tool == "polygon" and self._inside(pos) and left:
            self._polygon_press(pos)
            event.accept()
            return
        if self.tool == "edit" and self._inside(pos) and left and self._edit_press(event, pos):
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        pos = self._clamped(self._scene_pos(event))
        if self._drag_start is not None and self._drag_item is not None:
            self._drag_item.setRect(QRectF(self._drag_start, pos).normalized())
            event.accept()
            return
        if self._grab is not None:
            self._edit_drag(pos)
            event.accept()
            return
        if self._draft:
            self._draw_draft(pos)
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        pos = self._clamped(self._scene_pos(event))
        if self._grab is not None:
            self._edit_release(pos)
            event.accept()
            return
        if self._drag_start is not None:
            start = self._drag_start
            if self.tool == "rectangle" and (abs(pos.x() - start.x()) < MIN_BOX or abs(pos.y() - start.y()) < MIN_BOX):
                event.accept()  # a click, not a drag: the rectangle follows the mouse to a second click
                return
            self._finish_box(pos)
            event.accept()
            return
        super().mouseReleaseEvent(event)

    def _finish_box(self, end: QPointF) -> None:
        start = self._end_drag()
        if abs(end.x() - start.x()) < MIN_BOX or abs(end.y() - start.y()) < MIN_BOX:
            return
        if self.tool == "rectangle":
            self.drawn.emit("rectangle", [[start.x(), start.y()], [end.x(), end.y()]])
        else:
            self.box_drawn.emit(start.x(), start.y(), end.x(), end.y())

    def mouseDoubleClickEvent(self, event) -> None:  # noqa: N802
        if self.tool == "polygon" and self._draft:
            # Its first press added the last vertex; the second one (this event) closes the polygon.
            self.close_polygon()
            event.accept()
            return
        super().mouseDoubleClickEvent(event)

    def keyPressEvent(self, event) -> None:  # noqa: N802
        if self._draft and event.key() in (Qt.Key.Key_Return, Qt.Key.Key_Enter):
            self.close_polygon()
            event.accept()
            return
        if self._draft and event.key() == Qt.Key.Key_Backspace:
            self.undo_point()
            event.accept()
            return
        super().keyPressEvent(event)

    def _clamped(self, pos: QPointF) -> QPointF:
        r = self.sceneRect()
        return QPointF(min(max(pos.x(), r.left()), r.right()), min(max(pos.y(), r.top()), r.bottom()))

    # ---- zoom and pan ------------------------------------------------------------------------------
    def zoom_level(self) -> float:
        return self.transform().m11()

    def zoom(self, factor: float) -> None:
        level = self.zoom_level() * factor
        if 0.02 <= level <= 64:
            self.auto_fit = False
            self.scale(factor, factor)

    def fit(self) -> None:
        if self.image_item is not None:
            self.auto_fit = True
            self.fitInView(self.sceneRect(), Qt.AspectRatioMode.KeepAspectRatio)

    def actual_size(self) -> None:
        self.auto_fit = False
        self.resetTransform()

    def resizeEvent(self, event) -> None:  # noqa: N802
        super().resizeEvent(event)
        if self.auto_fit:
            self.fit()

    def wheelEvent(self, event) -> None:  # noqa: N802 - Qt's name
        self.zoom(ZOOM_STEP if event.angleDelta().y() > 0 else 1 / ZOOM_STEP)
