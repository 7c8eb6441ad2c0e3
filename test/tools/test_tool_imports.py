"""Tools are entry points, not libraries: no ``l2cocc`` command module imports another one (shared code lives in
core or in a tools library module such as ``tools/rendering.py``)."""
import ast
from pathlib import Path

from l2cocc_ros.tools.cli import COMMANDS

TOOLS = Path(__file__).resolve().parents[2] / "l2cocc_ros" / "tools"
COMMAND_MODULES = {module for module, _ in COMMANDS.values() if module.startswith("l2cocc_ros.tools.")}


def imported_modules(path: Path):
    """Every module a file imports (``from pkg import name`` counts as ``pkg`` and ``pkg.name``)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative to l2cocc_ros.tools
                base = ".".join(["l2cocc_ros", "tools"][: 3 - node.level] + ([base] if base else []))
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def test_no_tool_imports_another_tools_entry_point():
    assert len(COMMAND_MODULES) >= 10 and "l2cocc_ros.tools.evaluate" in COMMAND_MODULES
    offenders = {}
    for module in sorted(COMMAND_MODULES):
        path = TOOLS / (module.rsplit(".", 1)[1] + ".py")
        others = sorted(set(imported_modules(path)) & (COMMAND_MODULES - {module}))
        if others:
            offenders[module] = others
    assert not offenders, f"tools importing other tools (move the shared code to a library module): {offenders}"


def test_the_check_sees_each_import_form(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("import l2cocc_ros.tools.score\nfrom l2cocc_ros.tools import evaluate\n"
                     "from .kitti2bag import main\nfrom l2cocc_ros.tools.render import main as m\n")
    found = set(imported_modules(probe)) & COMMAND_MODULES
    assert found == {"l2cocc_ros.tools.score", "l2cocc_ros.tools.evaluate", "l2cocc_ros.tools.kitti2bag",
                     "l2cocc_ros.tools.render"}
