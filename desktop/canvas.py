"""The image view: the picture, the mask overlay, the answer's boxes and points, zoom and pan.

Scene coordinates are the ORIGINAL image's pixels whatever is displayed: an image larger than
DISPLAY_MAX on a side is shown downscaled (the pixmap item is scaled back up), and so are the overlays,
while every mask the app keeps and exports stays at full resolution."""

from __future__ import annotations

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QBrush, QColor, QImage, QPainter, QPen, QPixmap
from PySide6.QtWidgets import QGraphicsItem, QGraphicsPixmapItem, QGraphicsScene, QGraphicsView

DISPLAY_MAX = 4096
ZOOM_STEP = 1.25
TOOLS = ("pan", "click", "box")  # drag to pan; click to refine (left adds, right removes); drag a box
MIN_BOX = 2.0  # a drag shorter than this (image pixels) is a click, not a box


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


def mask_outline(mask: np.ndarray) -> np.ndarray:
    """The mask's pixels that touch a pixel outside it (4-neighbourhood; the image border counts as outside)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def display_factor(width: int, height: int, limit: int = DISPLAY_MAX) -> int:
    """The integer downscale that brings the longer side within `limit` (1 = full size)."""
    return max(1, -(-max(width, height) // limit))


class Canvas(QGraphicsView):
    clicked = Signal(float, float, bool)  # image x, y; True adds the spot (left button), False removes it (right)
    box_drawn = Signal(float, float, float, float)  # x1, y1, x2, y2 in image pixels

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
        self.setMinimumSize(320, 240)

    # ---- content -----------------------------------------------------------------------------------
    def set_image(self, rgb: np.ndarray) -> None:
        self.scene().clear()
        self.mask_item = self.highlight_item = self.selection_item = self._drag_item = None
        self.marks, self.prompt_marks = [], []
        self._mask = None
        h, w = rgb.shape[:2]
        self.factor = display_factor(w, h)
        shown = rgb[::self.factor, ::self.factor] if self.factor > 1 else rgb
        self.image_item = self.scene().addPixmap(QPixmap.fromImage(rgb_to_qimage(shown)))
        self.image_item.setScale(self.factor)
        self.image_item.setTransformationMode(Qt.TransformationMode.SmoothTransformation)
        self.scene().setSceneRect(QRectF(0, 0, w, h))
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

    # ---- tools -------------------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        if tool not in TOOLS:
            raise ValueError(f"unknown tool {tool!r}")
        self.tool = tool
        self.setDragMode(QGraphicsView.DragMode.ScrollHandDrag if tool == "pan" else QGraphicsView.DragMode.NoDrag)
        self.viewport().setCursor(Qt.CursorShape.OpenHandCursor if tool == "pan" else Qt.CursorShape.CrossCursor)

    def _scene_pos(self, event) -> QPointF:
        return self.mapToScene(event.position().toPoint())

    def _inside(self, pos: QPointF) -> bool:
        return self.image_item is not None and self.sceneRect().contains(pos)

    def mousePressEvent(self, event) -> None:  # noqa: N802 - Qt's name
        pos = self._scene_pos(event)
        if self.tool == "click" and self._inside(pos) and event.button() in (Qt.MouseButton.LeftButton,
                                                                             Qt.MouseButton.RightButton):
            self.clicked.emit(pos.x(), pos.y(), event.button() == Qt.MouseButton.LeftButton)
            event.accept()
            return
        if self.tool == "box" and self._inside(pos) and event.button() == Qt.MouseButton.LeftButton:
            self._drag_start = pos
            pen = QPen(QColor(40, 220, 90), 0, Qt.PenStyle.DashLine)
            pen.setCosmetic(True)
            self._drag_item = self.scene().addRect(QRectF(pos, pos), pen)
            self._drag_item.setZValue(6)
            event.accept()
            return
        super().mousePressEvent(event)

    def mouseMoveEvent(self, event) -> None:  # noqa: N802
        if self._drag_start is not None and self._drag_item is not None:
            self._drag_item.setRect(QRectF(self._drag_start, self._clamped(self._scene_pos(event))).normalized())
            event.accept()
            return
        super().mouseMoveEvent(event)

    def mouseReleaseEvent(self, event) -> None:  # noqa: N802
        if self._drag_start is not None:
            start, end = self._drag_start, self._clamped(self._scene_pos(event))
            self._drag_start = None
            if self._drag_item is not None:
                self.scene().removeItem(self._drag_item)
                self._drag_item = None
            if abs(end.x() - start.x()) >= MIN_BOX and abs(end.y() - start.y()) >= MIN_BOX:
                self.box_drawn.emit(start.x(), start.y(), end.x(), end.y())
            event.accept()
            return
        super().mouseReleaseEvent(event)

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
