#!/usr/bin/env bash
# The README's test command: set up the environment with the test tools, then run the suite.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# The runtimes the parity tests exercise; STAR_TEST_EXTRAS adds more. Under this command a test whose
# runtime is missing fails instead of skipping (tests/models.py: require).
extras="torch,onnx,llama,export,train,desktop${STAR_TEST_EXTRAS:+,$STAR_TEST_EXTRAS}"
bash "$repo/installer/setup.sh" --dev --with "$extras"
export STAR_TEST_FULL=1
cd "$repo"
exec .venv/bin/python -m pytest -q "$@"
