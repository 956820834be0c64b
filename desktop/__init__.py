"""StAR Desktop, the PySide6 app. Depends on `engine`; `engine` never imports this package.

Qt-free parts (testable without a display): outcome.py (what a result means, per sample and per vote
cluster), exports.py (mask / overlay PNG, COCO RLE JSON, labelme JSON), store.py (autosave of results
and query history per image, and the app's settings), messages.py (errors as a message + a remedy).
The Qt parts: worker.py (inference off the UI thread), canvas.py, panels.py, window.py, app.py.
"""
