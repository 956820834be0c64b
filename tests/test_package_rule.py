"""The one-way package rule of docs/architecture.md, read from the source itself (every import statement,
at module level or inside a function): `engine` imports none of `export`, `training` and `desktop`;
`export` does not import `training` or `desktop`; nothing imports `tests`."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "engine": {"export", "training", "desktop", "tests"},
    "export": {"training", "desktop", "tests"},
    "training": {"desktop", "tests"},
    "desktop": {"export", "training", "tests"},
}


def imported_packages(path: Path) -> set[tuple[int, str]]:
    """(line, top-level package) of every absolute import in a file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            found |= {(node.lineno, alias.name.split(".")[0]) for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            found.add((node.lineno, node.module.split(".")[0]))
    return found


def test_every_package_imports_only_downwards():
    broken = []
    for package, forbidden in FORBIDDEN.items():
        for path in sorted((REPO / package).rglob("*.py")):
            broken += [f"{path.relative_to(REPO)}:{line} imports {name}" for line, name in imported_packages(path)
                       if name in forbidden]
    assert not broken, "\n".join(broken)


def test_the_rule_sees_imports_inside_functions(tmp_path):
    """The check itself: an import hidden in a function body is found (the cycle that once existed was one)."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from training.nano.policy_model import x\n    import desktop.app\n")
    assert imported_packages(source) == {(2, "training"), (3, "desktop")}
