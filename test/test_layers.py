"""Layering: ``l2cocc_ros.core`` works without ROS (style guide rule 1, design "Layers").

Every module under ``l2cocc_ros/core`` (found by walking the directory, so new modules are covered
automatically) is imported in a fresh interpreter in which rclpy, message packages, tf2, message_filters,
cv_bridge and our own ``ros``/``tools``/``msg`` layers cannot be imported. A static scan also catches
imports hidden inside functions.
"""
from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import List

REPO = Path(__file__).resolve().parents[1]
CORE = REPO / "l2cocc_ros" / "core"

_BLOCKER = r'''
import importlib.abc, json, sys, traceback

def forbidden(name):
    root = name.split(".")[0]
    if name == "l2cocc_ros.msg" or name.startswith(("l2cocc_ros.msg.", "l2cocc_ros.ros", "l2cocc_ros.tools")):
        return True
    return (root in {"rclpy", "rpyutils", "builtin_interfaces", "message_filters", "cv_bridge", "sensor_msgs_py",
                     "launch", "launch_ros", "ament_index_python", "rosbag2_py"}
            or root.startswith(("rcl", "rmw", "rosidl", "tf2"))
            or root.endswith(("_msgs", "_interfaces")))

class Blocker(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if forbidden(name):
            raise ModuleNotFoundError(f"{name} is blocked: l2cocc_ros.core must not import ROS", name=name)
        return None

sys.meta_path.insert(0, Blocker())
failures = {}
for mod in sys.argv[1:]:
    try:
        __import__(mod)
    except BaseException:
        failures[mod] = traceback.format_exc(limit=-3)
loaded = sorted(m for m in sys.modules if forbidden(m))
print(json.dumps({"failures": failures, "forbidden_loaded": loaded}))
'''

_FORBIDDEN_ROOTS = ("rclpy", "message_filters", "cv_bridge", "sensor_msgs_py", "launch", "launch_ros",
                    "builtin_interfaces", "ament_index_python")


def core_modules() -> List[str]:
    """Dotted names of every module and package under l2cocc_ros/core."""
    names = []
    for path in sorted(CORE.rglob("*.py")):
        rel = path.relative_to(REPO).with_suffix("")
        parts = rel.parts[:-1] if rel.name == "__init__" else rel.parts
        names.append(".".join(parts))
    return names


def _is_forbidden(module: str) -> bool:
    root = module.split(".")[0]
    return (root in _FORBIDDEN_ROOTS or root.startswith(("rcl", "rmw", "rosidl", "tf2"))
            or root.endswith(("_msgs", "_interfaces"))
            or module == "l2cocc_ros.msg" or module.startswith(("l2cocc_ros.ros", "l2cocc_ros.tools")))


def _ros_free_env() -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AMENT_PREFIX_PATH", "LD_LIBRARY_PATH")}
    env["PYTHONPATH"] = str(REPO)  # no rosidl install tree on the path
    return env


def test_core_modules_are_found():
    mods = core_modules()
    assert "l2cocc_ros.core" in mods and "l2cocc_ros.core.classes" in mods and "l2cocc_ros.core.grid" in mods


def test_every_core_module_imports_without_ros():
    mods = core_modules()
    proc = subprocess.run([sys.executable, "-P", "-c", _BLOCKER, *mods], env=_ros_free_env(), cwd=str(REPO),
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert not report["failures"], "\n".join(f"--- {m}\n{tb}" for m, tb in report["failures"].items())
    assert report["forbidden_loaded"] == []


def test_plain_import_of_core_without_ros_on_the_path():
    """The issue's check, literally: ``python -c "import l2cocc_ros.core"`` with no rosidl tree on the path."""
    proc = subprocess.run([sys.executable, "-P", "-c", "import sys, l2cocc_ros.core; "
                           "print(sorted(m for m in sys.modules if m.split('.')[0] == 'rclpy'))"],
                          env=_ros_free_env(), cwd=str(REPO), capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert proc.stdout.strip() == "[]"


def test_no_ros_import_anywhere_in_core_source():
    """Static check, so an import inside a function (not run at import time) is caught too."""
    offenders = []
    for path in sorted(CORE.rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # resolve "from ..x import y" against the file's package
                    pkg = path.relative_to(REPO).with_suffix("").parts[:-1]
                    base = ".".join(pkg[: len(pkg) - node.level + 1] + ((base,) if base else ()))
                names = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            offenders += [f"{path.relative_to(REPO)}:{node.lineno}: {n}" for n in names if _is_forbidden(n)]
    assert not offenders, "core must not import ROS:\n" + "\n".join(offenders)
