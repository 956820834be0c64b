"""The repository explains itself and speaks of itself: no work diary or machine paths in tracked text,
links that resolve inside the repository, a README that is a front page, recipes in the wheel."""

import re
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BINARY = {".gguf", ".onnx", ".safetensors", ".png", ".pt", ".svg", ".ico"}
# Built from pieces so that this file does not match itself.
DIARY = re.compile("|".join([r"\bsessions? \d", r"\bTried " + "in session", r"\bthis " + "VM\b", r"\bdev " + "VM\b"]),
                   re.IGNORECASE)
MACHINE_PATHS = re.compile(r"(?<![\w.])/(?:" + "|".join(["work", "root", "Users"]) + r")/|(?<![\w.])/home/\w")


def tracked_files() -> list[Path]:
    try:
        names = subprocess.run(["git", "ls-files"], cwd=REPO, capture_output=True, text=True, check=True).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        pytest.skip("not a git checkout")
    return [REPO / n for n in names if (REPO / n).is_file()]


def tracked_text_files() -> list[Path]:
    return [p for p in tracked_files() if p.suffix not in BINARY]


def test_no_tracked_text_names_work_sessions_or_one_machines_paths():
    found = []
    for path in tracked_text_files():
        for number, line in enumerate(path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if DIARY.search(line) or MACHINE_PATHS.search(line):
                found.append(f"{path.relative_to(REPO)}:{number}: {line.strip()[:100]}")
    assert not found, "\n".join(found)


def test_every_link_in_the_readme_and_docs_resolves_inside_the_repository():
    broken = []
    for doc in [REPO / "README.md", REPO / "CHANGELOG.md", *sorted((REPO / "docs").glob("*.md"))]:
        for target in re.findall(r"\]\(([^)\s]+)\)", doc.read_text(encoding="utf-8")):
            if re.match(r"[a-z]+://", target) or target.startswith("#"):
                continue
            resolved = (doc.parent / target.split("#")[0]).resolve()
            if REPO not in resolved.parents or not resolved.exists():
                broken.append(f"{doc.relative_to(REPO)} -> {target}")
    assert not broken, broken


def test_the_readme_is_a_front_page_that_starts_with_the_two_commands():
    text = (REPO / "README.md").read_text(encoding="utf-8")
    assert len(text.encode()) <= 12 * 1024
    first_block = re.search(r"```bash\n(.*?)\n```", text, re.S).group(1).splitlines()
    assert first_block[0].startswith("bash installer/setup.sh") and "star segment" in first_block[0]
    assert first_block[1] == "bash installer/test.sh" and len(first_block) == 2


def test_the_wheel_carries_the_recipes_and_the_nano_bundle(tmp_path):
    """Built from a copy of the tracked files (a build inside the checkout would leave build/ behind)."""
    source = tmp_path / "source"
    for path in tracked_files():
        target = source / path.relative_to(REPO)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                           str(tmp_path), str(source)], capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    (wheel,) = tmp_path.glob("star_desktop-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    recipes = {p.relative_to(REPO).as_posix() for p in (REPO / "training" / "recipes").iterdir()}
    assert recipes and recipes <= names
    assert {"engine/models/nano/bundle.json", "engine/models/nano/policy/model-q8_0.gguf"} <= names
