"""File dialogs that cannot freeze the app. Qt's own file dialog (the one used where the desktop offers no
native dialog, e.g. a bare X server) asks its icon provider for every file it lists, and the default
provider finds a file's icon and type by its MIME type, which for a file without a known extension means
reading its first bytes, on the GUI thread. Under /proc or /dev some files never answer a read (/proc/kmsg,
a FIFO, a tty): typing "/proc" into the save dialog froze the whole app. Here the icons and the type
column come from the file's name and kind only; nothing is opened."""

from __future__ import annotations

from PySide6.QtCore import QFileInfo
from PySide6.QtGui import QAbstractFileIconProvider
from PySide6.QtWidgets import QFileDialog, QWidget


class NameOnlyIcons(QAbstractFileIconProvider):
    """Folder / drive / file icons and a type from the suffix; never reads a file."""

    def icon(self, what):  # Qt's overloaded name: icon(IconType) and icon(QFileInfo)
        if isinstance(what, QFileInfo):
            if what.isRoot():
                kind = QAbstractFileIconProvider.IconType.Drive
            elif what.isDir():
                kind = QAbstractFileIconProvider.IconType.Folder
            else:
                kind = QAbstractFileIconProvider.IconType.File
            return super().icon(kind)
        return super().icon(what)

    def type(self, info: QFileInfo) -> str:
        if info.isDir():
            return "Folder"
        suffix = info.suffix()
        return f"{suffix.upper()} file" if suffix else "File"


def file_dialog(parent: QWidget | None, title: str, directory: str = "", name_filter: str = "", *,
                save: bool = False, folders: bool = False) -> QFileDialog:
    """A QFileDialog with the icon provider above (kept alive by the dialog)."""
    dialog = QFileDialog(parent, title, directory, name_filter)
    harden(dialog)
    if save:
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave)
    if folders:
        dialog.setFileMode(QFileDialog.FileMode.Directory)
        dialog.setOption(QFileDialog.Option.ShowDirsOnly, True)
    elif not save:
        dialog.setFileMode(QFileDialog.FileMode.ExistingFile)
    return dialog


def harden(dialog: QFileDialog) -> None:
    provider = NameOnlyIcons()
    dialog._name_only_icons = provider  # the dialog does not own its provider: keep it alive as long as it
    dialog.setIconProvider(provider)


def choose(parent: QWidget | None, title: str, directory: str = "", name_filter: str = "", *, save: bool = False,
           folders: bool = False) -> str:
    """The chosen path, or "" when the person cancels (what QFileDialog's static helpers return)."""
    dialog = file_dialog(parent, title, directory, name_filter, save=save, folders=folders)
    if dialog.exec() != QFileDialog.DialogCode.Accepted or not dialog.selectedFiles():
        return ""
    return dialog.selectedFiles()[0]
