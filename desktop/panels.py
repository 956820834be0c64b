"""The side panels: the reasoning of every sample as it streams, the samples' answers, the vote
inspector (clusters with votes, mean SAM score, label and members) and the image's objects as the
annotator edits them (with the label list). Selecting a row asks the window to show it (signals carry
indices; the window owns the Outcome and the Annotation)."""

from __future__ import annotations

from PySide6.QtCore import Qt, Signal
from PySide6.QtGui import QTextCursor
from PySide6.QtWidgets import (
    QHBoxLayout,
    QLabel,
    QListWidget,
    QListWidgetItem,
    QPlainTextEdit,
    QPushButton,
    QTabWidget,
    QTreeWidget,
    QTreeWidgetItem,
    QVBoxLayout,
    QWidget,
)

from .annotation import Annotation
from .outcome import Outcome

STATUS_MARK = {"ok": "✓", "empty": "∅", "failed": "✗", "stopped": "■"}


class Banner(QLabel):
    """A problem under the query box: what went wrong and what to do (messages.UserMessage), hidden until one
    comes; it wraps, so a long list of failed files is named in full."""

    def __init__(self):
        super().__init__()
        self.setWordWrap(True)
        self.setStyleSheet("QLabel { background: #5a1e1e; color: white; padding: 6px; }")
        self.setVisible(False)

    def show_message(self, message) -> None:
        self.setText(f"<b>{message.title}</b>: {message.text}<br>{message.remedy}")
        self.setVisible(True)


class ReasoningPanel(QTabWidget):
    """One read-only text tab per sample; tokens append as they arrive."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.views: list[QPlainTextEdit] = []

    def reset(self, samples: int) -> None:
        self.clear()
        self.views = []
        for i in range(samples):
            view = QPlainTextEdit()
            view.setReadOnly(True)
            view.setLineWrapMode(QPlainTextEdit.LineWrapMode.WidgetWidth)
            self.views.append(view)
            self.addTab(view, f"#{i}")

    def append(self, chunks: dict) -> None:
        for sample, text in chunks.items():
            if 0 <= sample < len(self.views):
                view = self.views[sample]
                view.moveCursor(QTextCursor.MoveOperation.End)
                view.insertPlainText(text)

    def mark(self, sample: int, status: str) -> None:
        if 0 <= sample < self.count():
            self.setTabText(sample, f"#{sample} {STATUS_MARK.get(status, '?')}")

    def show_outcome(self, outcome: Outcome) -> None:
        """The full texts of a finished or restored result (streaming may have been throttled or absent)."""
        self.reset(len(outcome.samples))
        for i, s in enumerate(outcome.samples):
            problem = s.get("reasoning_problem")
            # the model's text as written, but not passed off as reasoning when it is not readable
            self.views[i].setPlainText((f"[This is not readable reasoning: {problem}.]\n\n" if problem else "")
                                       + s["text"])
            self.mark(i, outcome.sample_status(i))

    def text(self, sample: int) -> str:
        return self.views[sample].toPlainText()


class SamplesPanel(QListWidget):
    sample_selected = Signal(int)  # -1: none

    def __init__(self, parent=None):
        super().__init__(parent)
        self.currentRowChanged.connect(self.sample_selected.emit)

    def show_outcome(self, outcome: Outcome | None) -> None:
        self.blockSignals(True)
        self.clear()
        if outcome is not None:
            for i, s in enumerate(outcome.samples):
                item = QListWidgetItem(f"{STATUS_MARK.get(outcome.sample_status(i), '?')} {outcome.sample_summary(i)}")
                if outcome.sample_status(i) not in ("ok", "stopped") and s.get("reason"):
                    item.setToolTip(s["reason"])
                self.addItem(item)
        self.blockSignals(False)


class VotePanel(QWidget):
    """Clusters (top level) and their members (children); the selected clusters are marked ★."""

    cluster_selected = Signal(int)  # cluster id, -1: none
    member_selected = Signal(int, int)  # sample, object

    COLUMNS = ["cluster", "votes", "ratio", "mean score", "label", "selected"]

    def __init__(self, parent=None):
        super().__init__(parent)
        self.summary = QLabel("No vote yet: run with 8 or more samples to see one.")
        self.summary.setWordWrap(True)
        self.tree = QTreeWidget()
        self.tree.setHeaderLabels(self.COLUMNS)
        self.tree.setRootIsDecorated(True)
        self.tree.currentItemChanged.connect(self._on_current)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.summary)
        layout.addWidget(self.tree)

    def show_outcome(self, outcome: Outcome | None) -> None:
        self.tree.blockSignals(True)
        self.tree.clear()
        vote = outcome.vote if outcome is not None else None
        if vote is None:
            self.summary.setText("No vote: a single sample is StAR's direct answer." if outcome is not None
                                 else "No vote yet: run with 8 or more samples to see one.")
        else:
            self.summary.setText(
                f"K = {vote['k']} object(s); {vote['valid_runs']} valid samples, {vote['no_object_votes']} said "
                f"'no object', {vote['abstained']} could not be parsed" + (f". {vote['reason']}" if vote["reason"] else "")
                + f". Clusters: {len(outcome.clusters)}; backend: {vote['backend']}"
                + ("." if outcome.temperature is None else f"; sampled at temperature {outcome.temperature:g}."))
            for c in outcome.clusters:
                top = QTreeWidgetItem([str(c["id"]), str(c["votes"]), f"{c['ratio']:.0%}", f"{c['mean_score']:.3f}",
                                       c["label"] or "", "★" if c["selected"] else ""])
                top.setData(0, Qt.ItemDataRole.UserRole, ("cluster", c["id"]))
                for m in c["members"]:
                    label = outcome.samples[m["sample"]]["targets"][m["object"]].get("label") or ""
                    child = QTreeWidgetItem([f"sample {m['sample']} · object {m['object']}", "", "",
                                             f"{m['score']:.3f}", label, ""])
                    child.setData(0, Qt.ItemDataRole.UserRole, ("member", m["sample"], m["object"]))
                    top.addChild(child)
                self.tree.addTopLevelItem(top)
            self.tree.expandAll()  # widths from the member rows too, or "sample 12 · object 1" is cut off
            for i in range(len(self.COLUMNS)):
                self.tree.resizeColumnToContents(i)
            self.tree.collapseAll()
            for i in range(self.tree.topLevelItemCount()):  # the selected clusters' members stay in view
                item = self.tree.topLevelItem(i)
                item.setExpanded(item.text(5) == "★")
        self.tree.blockSignals(False)

    def select_cluster(self, cluster_id: int) -> None:
        for i in range(self.tree.topLevelItemCount()):
            item = self.tree.topLevelItem(i)
            if item.data(0, Qt.ItemDataRole.UserRole) == ("cluster", cluster_id):
                self.tree.setCurrentItem(item)

    def _on_current(self, current, _previous) -> None:
        data = current.data(0, Qt.ItemDataRole.UserRole) if current is not None else None
        if data is None:
            self.cluster_selected.emit(-1)
        elif data[0] == "cluster":
            self.cluster_selected.emit(data[1])
        else:
            self.member_selected.emit(data[1], data[2])


class ObjectsPanel(QWidget):
    """The image's objects (label, area, the query that made it or "edited") and the label list (each label
    with its count). Double-click or F2 renames; the buttons mirror the Edit menu."""

    object_selected = Signal(int)  # -1: none
    rename_requested = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.list = QListWidget()
        self.list.currentRowChanged.connect(self.object_selected.emit)
        self.list.itemDoubleClicked.connect(lambda item: self.rename_requested.emit(self.list.row(item)))
        self.labels = QListWidget()
        self.labels.setMaximumHeight(120)
        self.buttons: dict[str, QPushButton] = {}
        row = QHBoxLayout()
        for name, text in (("new", "New"), ("rename", "Rename"), ("delete", "Delete"), ("undo", "Undo"),
                           ("redo", "Redo"), ("save", "Save")):
            self.buttons[name] = QPushButton(text)
            row.addWidget(self.buttons[name])
        self.hint = QLabel("Q: click to refine (left adds, right removes) · B: draw a box · H: pan")
        self.hint.setWordWrap(True)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list, 1)
        layout.addLayout(row)
        layout.addWidget(QLabel("Labels"))
        layout.addWidget(self.labels)
        layout.addWidget(self.hint)

    def show_annotation(self, annotation: Annotation | None) -> None:
        self.list.blockSignals(True)
        self.list.clear()
        self.labels.clear()
        if annotation is not None:
            w, h = annotation.size
            for o in annotation.objects:
                origin = f"“{o.query}”" if o.query else "by hand or from a file"
                self.list.addItem(f"{o.label} · {100 * o.area / (w * h):.1f}% · {origin}")
            self.labels.addItems([f"{label} ({count})" for label, count in annotation.labels()])
            self.list.setCurrentRow(-1 if annotation.selected is None else annotation.selected)
            self.buttons["undo"].setEnabled(annotation.can_undo())
            self.buttons["redo"].setEnabled(annotation.can_redo())
        self.list.blockSignals(False)
