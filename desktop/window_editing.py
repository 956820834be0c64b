"""The annotator's tools in the main window (a mixin of MainWindow): the image's objects, refining one with
SAM clicks and a box on the embedding the run already made, undo / redo, labels, saving labelme JSON
beside the image (with done marks in the folder list), and one query over the whole folder.

Every edit is autosaved with the image's record at once; the labelme file beside the image is written on
Save (Ctrl+S) and by the folder run, whose skip rule is `star label`'s: an image with that file is done."""

from __future__ import annotations

from pathlib import Path

from PySide6.QtWidgets import QInputDialog

from engine.annotations import labelme_file, labelme_path, labelme_target, write_labelme

from .annotation import AnnotatedObject, Annotation, Prompt, read_labelme
from .canvas import TOOLS
from .messages import UserMessage
from .outcome import Outcome
from .store import ImageRecord
from .worker import FolderRequest, RefineRequest

DONE_MARK = "✓ "
LABEL_HISTORY = 50  # labels offered by the label dialog beyond the image's own


def objects_from_outcome(outcome: Outcome) -> list[AnnotatedObject]:
    """A result's final objects, each with the answer's box and point as its starting SAM prompt (so a click
    refines what the model asked SAM for, rather than starting from nothing)."""
    objects = []
    for label, mask, target in outcome.answer_objects():
        prompt = Prompt()
        if target is not None:
            prompt = Prompt(((float(target["point"][0]), float(target["point"][1]), 1),),
                            tuple(float(v) for v in target["box"]))
        objects.append(AnnotatedObject(label, mask, prompt, outcome.query))
    return objects


def stored_annotation(record: ImageRecord, path: Path | None, size: tuple[int, int]) -> Annotation:
    """An image's annotation as last left: the app's autosave, else a labelme file beside the image, else
    the last complete result's objects, else nothing."""
    saved = record.annotation()
    if saved is not None and tuple(saved.get("size") or ()) == tuple(size):
        try:
            return Annotation.from_autosave(saved)
        except (KeyError, TypeError, ValueError):
            pass  # damaged: fall through to the other sources
    found_file = labelme_file(path) if path is not None else None
    if found_file is not None:
        found = read_labelme(found_file, size)
        if found is not None:
            return found
    result = record.latest_result()
    if result is not None and tuple(result.get("image_size", ())) == tuple(size) and not result.get("cancelled"):
        return Annotation(size, objects_from_outcome(Outcome(result)))
    return Annotation(size)


class EditingMixin:
    """The objects of the image on screen (self.annotation) and the tools that edit them."""

    # ---- showing ------------------------------------------------------------------------------------
    def load_annotation(self) -> None:
        h, w = self.image.shape[:2]
        self.annotation = stored_annotation(self.record, self.image_path, (w, h))
        self.show_annotation()

    def show_annotation(self) -> None:
        ann = self.annotation
        self.canvas.set_mask(ann.union() if ann is not None else None)
        current = ann.current if ann is not None else None
        self.canvas.set_selection(current.mask if current is not None else None)
        self.canvas.set_prompt(current.prompt.clicks if current else (), current.prompt.box if current else None)
        self.objects.show_annotation(ann)
        self.show_editable()
        for name in ("undo", "redo"):
            enabled = ann is not None and (ann.can_undo() if name == "undo" else ann.can_redo())
            self.actions_by_name[name].setEnabled(enabled)

    def objects_headline(self) -> str:
        """The headline for the image's objects as they are now (after an edit, a result's no longer does)."""
        ann = self.annotation
        if self.image is None or ann is None:
            return "Open an image (Ctrl+O, drop, or paste) and type a query."
        h, w = self.image.shape[:2]
        if not ann.objects:
            return f"{self.image_name()}: {w}×{h}, no objects. Type a query and press Enter."
        area = int(ann.union().sum())
        n = len(ann.objects)
        return f"{n} object{'s' if n != 1 else ''}, {area} pixels ({100 * area / (w * h):.1f}% of the image)"

    def _edited(self, *, by_hand: bool = True) -> None:
        """After every edit: shown, and autosaved with the image's record (a crash loses no edit). An edit by
        hand makes the headline describe the objects as they are now."""
        self.show_annotation()
        if by_hand:
            self.headline.setText(self.objects_headline() + " · edited")
        try:
            self.record.save_annotation(self.annotation.to_autosave())
        except OSError as exc:
            self.stage.setText(f"Could not autosave the edit: {exc.strerror or exc}")

    def add_result_to_annotation(self, outcome: Outcome) -> None:
        if self.annotation is not None and not outcome.stopped:
            self.annotation.add_result(objects_from_outcome(outcome), outcome.query)
            self._edited(by_hand=False)  # the headline is the result's

    # ---- objects ------------------------------------------------------------------------------------
    def select_object(self, index: int) -> None:
        if self.annotation is not None:
            self.annotation.select(index if index >= 0 else None)
            self.show_annotation()

    def new_object(self) -> None:
        """N: the next click or box starts a new object (nothing is listed until SAM has made its mask, and
        its label is asked for then, as labelme asks after a shape is drawn)."""
        if self._can_edit():
            self.annotation.select(None)
            self.show_annotation()
            if self.canvas.tool == "pan":
                self.set_tool("click")
            self.stage.setText("New object: click on it (left adds, right removes) or draw a box around it "
                               "(B); its label is asked for when SAM has made its mask.")

    def delete_object(self) -> None:
        if self._can_edit() and self.annotation.selected is not None:
            self.annotation.remove(self.annotation.selected)
            self._edited()

    def rename_object(self, index: int | None = None, label: str | None = None) -> None:
        ann = self.annotation
        index = ann.selected if index is None and ann is not None else index
        if ann is None or index is None or not 0 <= index < len(ann.objects):
            return
        if label is None:
            label = self.ask_label(ann.objects[index].label)
            if label is None:
                return
        ann.rename(index, label)
        self._edited()

    def ask_label(self, current: str | None = None) -> str | None:
        """labelme's label dialog: type a label or pick one from this image's labels and the ones used
        before (newest first); None when cancelled. The answer joins the remembered labels."""
        known = [name for name, _ in self.annotation.labels()] if self.annotation is not None else []
        choices = list(dict.fromkeys(known + self.settings.labels))
        default = current or (choices[0] if choices else "object")
        if default not in choices:
            choices.insert(0, default)
        label, ok = QInputDialog.getItem(self, "Label", "Label of this object:", choices, choices.index(default), True)
        label = " ".join(label.split()) if ok else ""
        if not label:
            return None
        self.settings.labels = [label] + [x for x in self.settings.labels if x != label][:LABEL_HISTORY - 1]
        self.save_settings()
        return label

    def undo(self) -> None:
        if self.annotation is not None and self.annotation.undo():
            self._edited()

    def redo(self) -> None:
        if self.annotation is not None and self.annotation.redo():
            self._edited()

    # ---- SAM refinement -----------------------------------------------------------------------------
    def set_tool(self, tool: str) -> None:
        self.canvas.set_tool(tool)
        for name in TOOLS:
            self.actions_by_name[f"tool_{name}"].setChecked(name == tool)
        self.show_editable()

    def _can_edit(self) -> bool:
        if self.image is None or self.annotation is None:
            self.show_message(UserMessage("No image", "there is nothing to edit.", "Open an image first."))
            return False
        if self.running:
            self.show_message(UserMessage("A run is in progress", "the model is busy with a query.",
                                          "Wait for it to finish, or press Esc to stop it, then edit."))
            return False
        return True

    def _prompt_of(self, index: int | None) -> Prompt:
        """The prompt a click or a box adds to: the selected object's, or an empty one (a new object)."""
        return Prompt() if index is None else self.annotation.objects[index].prompt

    def on_canvas_click(self, x: float, y: float, positive: bool) -> None:
        if self._can_edit():
            index = self.annotation.selected
            self._refine(index, self._prompt_of(index).with_click(x, y, positive))

    def on_canvas_box(self, x1: float, y1: float, x2: float, y2: float) -> None:
        if self._can_edit():
            index = self.annotation.selected
            self._refine(index, self._prompt_of(index).with_box((x1, y1, x2, y2)))

    def _refine(self, index: int | None, prompt: Prompt) -> None:
        """Ask SAM for the object at `index` with `prompt` (None: a new object, added when SAM answers)."""
        clicks, labels, box = prompt.as_arrays()
        if labels is not None and box is None and not labels.any():
            self.stage.setText("Add a spot first (left click): a removal alone does not say what the object is.")
            return
        obj = None if index is None else self.annotation.objects[index]
        self.refine_pending = (self.record.key, index, obj, prompt)
        self.stage.setText("Refining…")
        self.refine_requested.emit(RefineRequest(self.image, clicks, labels, box, self.settings.bundle or None,
                                                 tag=self.refine_pending))

    def _on_refined(self, tag, refinement) -> None:
        key, index, obj, prompt = tag
        # Only the latest request, for this image, onto the object it was asked for (an undo or another
        # image since then makes the answer stale: it is dropped).
        if tag is not getattr(self, "refine_pending", None) or self.record is None or key != self.record.key \
                or (index is not None and (index >= len(self.annotation.objects)
                                           or self.annotation.objects[index] is not obj)):
            return
        self.refine_pending = None
        if index is None:  # a new object: listed only now that it has a mask, under the label asked for
            if not refinement.mask.any():
                self.stage.setText("SAM found nothing there: no object was added. Click inside the object.")
                return
            label = self.ask_label()
            self.canvas.setFocus()  # the canvas keeps the single-key shortcuts after the dialog
            if label is None:
                self.stage.setText("No label given: the new object was not added.")
                return
            self.annotation.add_object(AnnotatedObject(label, refinement.mask, prompt, score=refinement.score))
        else:
            self.annotation.set_object(index, obj.edited(mask=refinement.mask, prompt=prompt, score=refinement.score))
        self._edited()
        self.stage.setText(f"Refined: SAM's score {refinement.score:.2f} ({refinement.decode_ms:.0f} ms, no re-encode "
                           "after the first).")

    def _on_refine_failed(self, tag, message: UserMessage) -> None:
        if tag is getattr(self, "refine_pending", None):
            self.refine_pending = None
            self.stage.setText("")
            self.show_message(message)

    # ---- saving beside the image --------------------------------------------------------------------
    def save_annotation(self) -> Path | None:
        """labelme JSON beside the image (Ctrl+S, as in labelme); the image is marked done in the folder list.
        A same-stem .json that is not a labelme file is never written over: the file goes beside it as
        <stem>.labelme.json, and a banner says so."""
        if self.image is None or self.annotation is None:
            self.show_message(UserMessage("Nothing to save", "there is no image.", "Open one first."))
            return None
        if self.image_path is None:
            self.show_message(UserMessage("No file to save beside", "a pasted image has no file of its own.",
                                          "Use Export → labelme JSON… to choose where to write it."))
            return None
        try:
            out = write_labelme(self.image_path, self.annotation.to_labelme(self.image_path.name,
                                                                              description=self._queries()))
        except OSError as exc:
            self.show_message(UserMessage("Save failed", f"could not write {labelme_target(self.image_path)}: "
                                                         f"{exc.strerror or exc}", "Choose a folder you can write to."))
            return None
        if out != labelme_path(self.image_path):
            self.show_message(UserMessage("Saved under another name", f"{labelme_path(self.image_path).name} beside "
                                          "the image is not a labelme file, so it was left as it is; the annotation "
                                          f"is in {out.name}.", "Move or rename the other file to give labelme "
                                          "and X-AnyLabeling the usual name."))
        self.mark_done(self.image_path)
        self.stage.setText(f"Saved {out.name} ({len(self.annotation.objects)} objects, labelme)")
        return out

    def _queries(self) -> str:
        return "; ".join(dict.fromkeys(o.query for o in self.annotation.objects if o.query))

    def mark_done(self, path: Path) -> None:
        if path in self.folder:
            item = self.files.item(self.folder.index(path))
            item.setText(DONE_MARK + path.name)

    def folder_names(self) -> list[str]:
        """The folder list's rows: ✓ before each image with a labelme file beside it."""
        return [(DONE_MARK if labelme_file(p) is not None else "") + p.name for p in self.folder]

    # ---- one query over the folder ------------------------------------------------------------------
    def run_folder(self) -> bool:
        """The query in the box over every image of the folder without a labelme file yet (as `star label`
        skips them); each finished image is recorded, its objects added, and its labelme file written."""
        if self.running:
            return False
        if not self.folder:
            self.show_message(UserMessage("No folder", "a folder run needs a folder of images.",
                                          "Open one with Ctrl+Shift+O."))
            return False
        query = self.typed_query()
        if query is None:
            return False
        todo = [p for p in self.folder if labelme_file(p) is None]
        skipped = [p for p in self.folder if p not in todo]
        if not todo:
            self.stage.setText(f"Every image of the folder is saved already ({len(skipped)}); nothing to run.")
            return False
        self.clear_message()
        n, temperature = self.sampling_choice()
        self.folder_running = True
        self._set_running(True)
        self.folder_query = query
        self.progress.setRange(0, len(todo))
        self.stage.setText(f"Folder: “{query}” on {len(todo)} images ({len(skipped)} saved already, skipped)…")
        self.folder_requested.emit(FolderRequest(todo, query, n, temperature, self.settings.bundle or None,
                                                 skipped=skipped))
        return True

    def _on_folder_progress(self, done: int, total: int, name: str) -> None:
        self.progress.setRange(0, total)
        self.progress.setValue(done)
        if name:
            self.stage.setText(f"Folder: {done}/{total} images · {name}")

    def _on_folder_image(self, path: str, key: str, outcome: Outcome) -> None:
        path = Path(path)
        data = outcome.data
        record = ImageRecord(key, self.home)
        record.save_result(data, path.name)
        record.add_query(outcome.query)
        current = self.record is not None and self.record.key == key and self.image_path == path
        annotation = self.annotation if current else stored_annotation(record, path, outcome.size)
        annotation.add_result(objects_from_outcome(outcome), outcome.query)
        record.save_annotation(annotation.to_autosave())
        try:
            write_labelme(path, annotation.to_labelme(path.name, description=outcome.query))
        except OSError as exc:
            self.stage.setText(f"Could not write {labelme_target(path).name}: {exc.strerror or exc}")
            return
        self.mark_done(path)
        if current:
            self.show_outcome(outcome)
            self.show_annotation()

    def _on_folder_image_failed(self, path: str, message: UserMessage) -> None:
        self.folder_failures.append((Path(path).name, message.text))

    def _on_folder_finished(self, summary: dict) -> None:
        self.folder_running = False
        self._set_running(False)
        failures = self.folder_failures
        self.folder_failures = []
        if summary.get("not_run"):  # the model did not load; the message says why
            self.stage.setText("Folder: not run.")
            self.run_finished.emit()
            return
        text = (f"Folder: {summary['done']} labelled, {summary['failed']} failed, {summary['skipped']} saved "
                "already (skipped)" + (". Stopped: run it again to continue." if summary["stopped"] else "."))
        self.stage.setText(text)
        if failures:  # the banner wraps: every failed image is named, however long the list
            self.show_message(UserMessage(
                f"{len(failures)} image{'s' if len(failures) != 1 else ''} of the folder failed",
                "; ".join(f"{name} ({why})" for name, why in failures),
                "They have no labelme file yet: fix or remove them, then run the folder again (saved images are "
                "skipped)."))
        self.run_finished.emit()
