"""StAR Desktop, the PySide6 app. Depends on `engine`; `engine` never imports this package.

Not built yet (issue: desktop app); this package holds its place in the layout.
"""
