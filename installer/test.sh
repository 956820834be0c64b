#!/usr/bin/env bash
# The README's test command: set up the environment with the test tools, then run the suite.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$repo/installer/setup.sh" --dev ${STAR_TEST_EXTRAS:+--with "$STAR_TEST_EXTRAS"}
cd "$repo"
exec .venv/bin/python -m pytest -q "$@"
