"""The main window's widgets, menus, toolbar and shortcuts (a mixin of MainWindow: it builds, the window acts)."""

from __future__ import annotations

import json
from pathlib import Path

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QColor, QKeySequence
from PySide6.QtWidgets import (
    QCheckBox,
    QComboBox,
    QDockWidget,
    QDoubleSpinBox,
    QHBoxLayout,
    QLabel,
    QListWidget,
    QMenu,
    QMessageBox,
    QProgressBar,
    QPushButton,
    QSlider,
    QSplitter,
    QTabWidget,
    QToolBar,
    QVBoxLayout,
    QWidget,
)

from .canvas import TOOLS, Canvas
from .panels import Banner, ObjectsPanel, ReasoningPanel, SamplesPanel, VotePanel
from .store import BUNDLE_TEMPERATURE

SAMPLE_CHOICES = (1, 8, 16, 32)
SAMPLE_IMAGE = Path(__file__).resolve().parent.parent / "engine" / "samples" / "scene.png"


def suggested_query() -> str:
    try:
        return json.loads(SAMPLE_IMAGE.with_suffix(".json").read_text())["query"]
    except (OSError, ValueError, KeyError):
        return "the thing that keeps food cold"


def is_typing_key(keys: str) -> bool:
    """A shortcut without a modifier that a text box would take as typing or editing (Esc and F-keys are not)."""
    return len(keys) == 1 or keys in ("Delete", "Backspace")


class LayoutMixin:
    """Builds the window's widgets and actions; every slot it connects is MainWindow's."""

    # ---- layout ------------------------------------------------------------------------------------
    def _build_ui(self) -> None:
        self.canvas = Canvas()
        self.query = QComboBox()
        self.query.setEditable(True)
        self.query.setInsertPolicy(QComboBox.InsertPolicy.NoInsert)
        # No inline completion: it silently extended a typed query to a longer history entry that Enter then
        # ran. The history stays one click away in the drop-down.
        self.query.setCompleter(None)
        self.query.lineEdit().setPlaceholderText('Ask for something, e.g. "the thing that keeps food cold"; Enter runs')
        self.query.lineEdit().returnPressed.connect(self.run_query)
        self.run_button = QPushButton("Run")
        self.run_button.clicked.connect(self.run_query)
        self.stop_button = QPushButton("Stop")
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.cancel)
        self.samples = QComboBox()
        for n in SAMPLE_CHOICES:
            self.samples.addItem(f"{n} sample{'s' if n > 1 else ''}" + (" (direct)" if n == 1 else " (vote)"), n)
        self.samples.setCurrentIndex(max(0, self.samples.findData(self.settings.samples)))
        self.samples.currentIndexChanged.connect(self._on_samples_changed)
        self.temperature = QDoubleSpinBox()
        # The lowest value stands for "the bundle's": a bundle may recommend its own voting temperature
        # (the nano model votes best at 0.25, StAR at 1.0), which the app follows unless the user picks one.
        self.temperature.setRange(BUNDLE_TEMPERATURE, 2.0)
        self.temperature.setDecimals(2)
        self.temperature.setSingleStep(0.05)
        self.temperature.setSpecialValueText("T: bundle's")
        self.temperature.setValue(self.settings.temperature)
        self.temperature.setPrefix("T ")
        self.temperature.setToolTip("Sampling temperature for voting (a single sample is greedy); lowest: the "
                                    "bundle's recommendation")
        self.suggestion = QPushButton(f"Try: {suggested_query()}")
        self.suggestion.setFlat(True)
        self.suggestion.clicked.connect(self.use_suggestion)
        self.suggestion.setVisible(False)
        row = QHBoxLayout()
        row.addWidget(self.query, 1)
        for w in (self.samples, self.temperature, self.run_button, self.stop_button):
            row.addWidget(w)
        self.banner = Banner()
        self.headline = QLabel("Open an image (Ctrl+O, drop, or paste) and type a query.")
        self.headline.setWordWrap(True)
        self.opacity = QSlider(Qt.Orientation.Horizontal)
        self.opacity.setRange(0, 100)
        self.opacity.setValue(int(self.settings.opacity * 100))
        self.opacity.setMaximumWidth(160)
        self.opacity.valueChanged.connect(self._on_style)
        self.colour_button = QPushButton("Colour…")
        self.colour_button.clicked.connect(self.choose_colour)
        self.show_mask = QCheckBox("Mask")
        self.show_mask.setChecked(True)
        self.show_mask.toggled.connect(self.canvas.set_mask_visible)
        style_row = QHBoxLayout()
        style_row.addWidget(self.headline, 1)
        style_row.addWidget(self.show_mask)
        style_row.addWidget(QLabel("Opacity"))
        style_row.addWidget(self.opacity)
        style_row.addWidget(self.colour_button)

        self.reasoning = ReasoningPanel()
        self.sample_list = SamplesPanel()
        self.sample_list.sample_selected.connect(self.show_sample)
        self.votes = VotePanel()
        self.votes.cluster_selected.connect(self.show_cluster)
        self.votes.member_selected.connect(self.show_member)
        self.objects = ObjectsPanel()
        self.objects.object_selected.connect(self.select_object)
        self.objects.rename_requested.connect(self.rename_object)
        for name, slot in (("new", self.new_object), ("rename", lambda: self.rename_object()),
                           ("delete", self.delete_object), ("undo", self.undo), ("redo", self.redo),
                           ("save", self.save_annotation)):
            self.objects.buttons[name].clicked.connect(slot)
        self.canvas.clicked.connect(self.on_canvas_click)
        self.canvas.box_drawn.connect(self.on_canvas_box)
        self.canvas.picked.connect(self.on_canvas_pick)
        self.canvas.shapes_edited.connect(self.on_shapes_edited)
        self.canvas.moved.connect(self.on_object_moved)
        self.canvas.drawn.connect(self.on_shape_drawn)
        self.side = QTabWidget()
        self.side.addTab(self.objects, "Objects")
        self.side.addTab(self.reasoning, "Reasoning")
        self.side.addTab(self.sample_list, "Samples")
        self.side.addTab(self.votes, "Votes")
        split = self.split = QSplitter()
        split.addWidget(self.canvas)
        split.addWidget(self.side)
        split.setStretchFactor(0, 3)
        split.setStretchFactor(1, 2)
        split.setSizes([760, 480])
        split.setChildrenCollapsible(False)
        self.side.setMinimumWidth(280)

        central = QWidget()
        layout = QVBoxLayout(central)
        layout.addLayout(row)
        layout.addWidget(self.suggestion, 0, Qt.AlignmentFlag.AlignLeft)
        layout.addWidget(self.banner)
        layout.addWidget(split, 1)
        layout.addLayout(style_row)
        self.setCentralWidget(central)

        self.files = QListWidget()
        self.files.currentRowChanged.connect(self._on_file_row)
        self.files_dock = QDockWidget("Folder", self)
        self.files_dock.setWidget(self.files)
        self.addDockWidget(Qt.DockWidgetArea.LeftDockWidgetArea, self.files_dock)
        self.files_dock.setVisible(False)

        self.stage = QLabel("")
        self.progress = QProgressBar()
        self.progress.setMaximumWidth(180)
        self.progress.setVisible(False)
        self.device = QLabel("model: not loaded")
        self.statusBar().addWidget(self.stage, 1)
        self.statusBar().addPermanentWidget(self.progress)
        self.statusBar().addPermanentWidget(self.device)
        self._on_samples_changed()
        self.canvas.set_style(QColor(self.settings.colour), self.settings.opacity)

    def _build_actions(self) -> None:
        self.actions_by_name: dict[str, QAction] = {}
        bar = QToolBar("Main")
        bar.setObjectName("main-toolbar")
        self.addToolBar(bar)
        file_menu = self.menuBar().addMenu("&File")
        export_menu = QMenu("&Export", self)
        edit_menu = self.menuBar().addMenu("&Edit")
        view_menu = self.menuBar().addMenu("&View")
        run_menu = self.menuBar().addMenu("&Run")
        help_menu = self.menuBar().addMenu("&Help")
        spec = [
            ("open", "Open image…", "Ctrl+O", self.open_dialog, file_menu, True),
            ("folder", "Open folder…", "Ctrl+Shift+O", self.open_folder_dialog, file_menu, True),
            ("paste", "Paste image", "Ctrl+Shift+V", self.paste_image, file_menu, True),
            ("video", "Open video or frame folder… (track a query through it)", "Ctrl+Shift+I", self.open_video_window,
             file_menu, False),
            ("previous", "Previous image", "A", lambda: self.step_folder(-1), file_menu, True),
            ("next", "Next image", "D", lambda: self.step_folder(1), file_menu, True),
            ("bundle", "Choose model bundle…", "Ctrl+B", self.choose_bundle, file_menu, False),
            ("default_bundle", "Use the bundled nano model", None, lambda: self.set_bundle(""), file_menu, False),
            ("save", "Save annotation beside the image (labelme JSON)", "Ctrl+S", self.save_annotation, file_menu, True),
            ("export_mask", "Mask PNG…", "Ctrl+Alt+S", lambda: self.export_dialog("mask"), export_menu, False),
            ("export_overlay", "Overlay PNG…", "Ctrl+Shift+S", lambda: self.export_dialog("overlay"), export_menu, False),
            ("export_coco", "COCO RLE JSON…", "Ctrl+E", lambda: self.export_dialog("coco"), export_menu, False),
            ("export_labelme", "labelme JSON…", "Ctrl+L", lambda: self.export_dialog("labelme"), export_menu, False),
            ("copy_mask", "Copy mask", "Ctrl+Shift+C", self.copy_mask, export_menu, True),
            ("quit", "Quit", "Ctrl+Q", self.close, file_menu, False),
            ("run", "Run query", "Ctrl+Return", self.run_query, run_menu, True),
            ("run_folder", "Run the query on the folder", "Ctrl+Shift+Return", self.run_folder, run_menu, False),
            ("cancel", "Stop", "Esc", self.cancel, run_menu, True),
            ("train_folder", "Train on this folder… (star-train adapt)", None, self.train_on_folder, run_menu, False),
            ("n1", "1 sample (direct answer)", "Ctrl+1", lambda: self.set_samples(1), run_menu, False),
            ("n8", "8 samples (vote)", "Ctrl+2", lambda: self.set_samples(8), run_menu, False),
            ("n16", "16 samples (vote)", "Ctrl+3", lambda: self.set_samples(16), run_menu, False),
            ("n32", "32 samples (vote)", "Ctrl+4", lambda: self.set_samples(32), run_menu, False),
            ("tool_pan", "Pan tool (drag moves the image)", "H", lambda: self.set_tool("pan"), edit_menu, True),
            ("tool_click", "Click tool (left adds, right removes)", "Q", lambda: self.set_tool("click"), edit_menu, True),
            ("tool_box", "Box tool (drag a box around an object)", "B", lambda: self.set_tool("box"), edit_menu, True),
            ("tool_edit", "Edit shapes (drag a shape or a vertex; Alt+click an edge adds a vertex, Alt+Shift+click "
             "deletes one)", "Ctrl+J", lambda: self.set_tool("edit"), edit_menu, True),
            ("tool_polygon", "Draw a polygon (click its vertices; Enter, a double click or its first vertex closes it, "
             "Backspace takes the last one back)", "Ctrl+N", lambda: self.set_tool("polygon"), edit_menu, True),
            ("tool_rectangle", "Draw a rectangle (drag, or click two corners)", "Ctrl+R",
             lambda: self.set_tool("rectangle"), edit_menu, True),
            ("new_object", "New object", "N", self.new_object, edit_menu, False),
            ("rename", "Rename object…", "F2", lambda: self.rename_object(), edit_menu, False),
            ("delete", "Delete object", "Delete", self.delete_object, edit_menu, False),
            ("undo", "Undo", "Ctrl+Z", self.undo, edit_menu, False),
            ("redo", "Redo", "Ctrl+Shift+Z", self.redo, edit_menu, False),
            ("fit", "Fit to window", "F", self.canvas.fit, view_menu, True),
            ("actual", "Actual pixels", "1", self.canvas.actual_size, view_menu, False),
            ("zoom_in", "Zoom in", "+", lambda: self.canvas.zoom(1.25), view_menu, False),
            ("zoom_out", "Zoom out", "-", lambda: self.canvas.zoom(0.8), view_menu, False),
            ("toggle_mask", "Show / hide mask", "M", self.show_mask.toggle, view_menu, False),
            ("focus_query", "Go to the query box", "Ctrl+K", self.query.setFocus, view_menu, False),
            ("keep_query", "Keep the query for the next image", None, self.set_keep_query, view_menu, False),
            ("shortcuts", "Keyboard shortcuts", "F1", self.show_shortcuts, help_menu, True),
        ]
        for name, text, keys, slot, menu, on_bar in spec:
            action = QAction(text, self)
            if keys:
                action.setShortcut(QKeySequence(keys))
            action.triggered.connect(slot)
            menu.addAction(action)
            if on_bar:
                bar.addAction(action)
            if keys and is_typing_key(keys):
                # A single key (D, A, F, M, 1, +, -) belongs to the canvas: typed in the query box it is text.
                action.setShortcutContext(Qt.ShortcutContext.WidgetWithChildrenShortcut)
                self.canvas.addAction(action)
            else:
                self.addAction(action)  # shortcuts work with the menu bar hidden too
            self.actions_by_name[name] = action
        for name in TOOLS:
            self.actions_by_name[f"tool_{name}"].setCheckable(True)
        self.actions_by_name["tool_pan"].setChecked(True)
        self.actions_by_name["redo"].setShortcuts([QKeySequence("Ctrl+Shift+Z"), QKeySequence("Ctrl+Y")])
        keep = self.actions_by_name["keep_query"]
        keep.setCheckable(True)
        keep.setChecked(self.settings.keep_query)
        file_menu.insertMenu(self.actions_by_name["quit"], export_menu)
        bar.addAction(export_menu.menuAction())

    def shortcuts(self) -> list[tuple[str, str]]:
        return [(a.text().rstrip("…"), a.shortcut().toString()) for a in self.actions_by_name.values()
                if not a.shortcut().isEmpty()] + [("Run query (in the query box)", "Enter"),
                                                  ("Zoom", "mouse wheel"), ("Pan", "drag")]

    def show_shortcuts(self) -> None:
        rows = "".join(f"<tr><td>{name}</td><td><b>{keys}</b></td></tr>" for name, keys in self.shortcuts())
        box = QMessageBox(self)
        box.setWindowTitle("Keyboard shortcuts")
        box.setText(f"<table cellpadding=3>{rows}</table>")
        box.setModal(False)
        box.show()
        self.shortcuts_box = box
