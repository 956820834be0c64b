#!/usr/bin/env bash
# The README's test command: set up the environment with the test tools, then run the suite.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The runtimes the parity tests exercise; STAR_TEST_EXTRAS adds more. Under this command a test whose
# runtime is missing fails instead of skipping (tests/models.py: require).
extras="torch,onnx,llama,export,train,desktop,serve${STAR_TEST_EXTRAS:+,$STAR_TEST_EXTRAS}"
bash "$repo/installer/setup.sh" --dev --with "$extras"
# The app's test on a real X server needs Xvfb and the X11 libraries Qt's xcb plugin links against
# (engine/qt_libs.py names the missing ones). Installed where this machine allows apt-get; elsewhere that
# one test skips and says why.
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  need="$("$repo/.venv/bin/python" -m engine.qt_libs)"
  command -v Xvfb >/dev/null 2>&1 || need="$need xvfb"
  if [ -n "${need// /}" ]; then
    echo "star test: installing $need (apt-get)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $need; } \
      >/dev/null 2>&1 || echo "star test: apt-get could not install $need; the X11 test will skip"
  fi
fi
export STAR_TEST_FULL=1
cd "$repo"
.venv/bin/ruff check .
exec .venv/bin/python -m pytest -q "$@"
