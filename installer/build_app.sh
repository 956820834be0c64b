#!/usr/bin/env bash
# Build the standalone StAR Desktop folder with PyInstaller, then start it headless once
# (QT_QPA_PLATFORM=offscreen) on the sample scene and check that it exits cleanly.
#   installer/build_app.sh [--bundle DIR]   (DIR: a model bundle to ship inside the app)
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bundle=""
if [[ "${1:-}" == "--bundle" ]]; then bundle="$(cd "$2" && pwd)"; fi
bash "$repo/installer/setup.sh" --with "onnx,llama,desktop"
"$repo/.venv/bin/python" -m pip install -q "pyinstaller>=6.10"
cd "$repo"
STAR_APP_BUNDLE="$bundle" .venv/bin/pyinstaller --noconfirm --clean --distpath build/app/dist \
  --workpath build/app/work installer/desktop/star-desktop.spec
app="build/app/dist/star-desktop/star-desktop"
home="$(mktemp -d)"
shot="$home/shot.png"
args=(engine/samples/scene.png --screenshot "$shot")
if [[ -n "$bundle" ]]; then args+=(--query "what coffee is served in"); fi
STAR_DESKTOP_HOME="$home" QT_QPA_PLATFORM=offscreen timeout 120 "$app" "${args[@]}"
test -s "$shot"
echo "star-desktop app: $(du -sh build/app/dist/star-desktop | cut -f1) in build/app/dist/star-desktop; headless start OK ($shot)"
