"""`python -m desktop` (and the PyInstaller entry point): start StAR Desktop."""

from desktop.app import main

raise SystemExit(main())
