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


def imports_a_command_module(path: Path) -> list[int]:
    """Lines of `path` that import one of the CLI's command modules (engine/commands/), absolutely or relatively."""
    lines = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom):
            module = node.module or ""
            names = {alias.name for alias in node.names}
            if module.startswith("engine.commands") or (node.level and (module.startswith("commands") or
                                                                          (module == "" and "commands" in names))):
                lines.append(node.lineno)
        elif isinstance(node, ast.Import) and any(a.name.startswith("engine.commands") for a in node.names):
            lines.append(node.lineno)
    return lines


def test_command_modules_are_the_clis_alone():
    """The app, the benchmarks and the tests start things through the engine's API (engine.serve.setup and
    the like), never through a CLI command module: those are the `star` CLI's leaves (engine/cli.py names
    them by string)."""
    broken = []
    for package in ("engine", "export", "training", "desktop", "tests", "installer"):
        for path in sorted((REPO / package).rglob("*.py")):
            if path.parent.name == "commands" or path == Path(__file__).resolve():
                continue
            broken += [f"{path.relative_to(REPO)}:{line}" for line in imports_a_command_module(path)]
    assert not broken, "\n".join(broken)


def test_the_command_rule_sees_relative_and_absolute_imports(tmp_path):
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from ..commands.serve import a\n    from engine.commands import serve\n"
                      "    from .. import commands\n    from ..serve.setup import load_workers\n")
    assert imports_a_command_module(source) == [2, 3, 4]
