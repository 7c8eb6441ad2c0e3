"""Packaging: package.xml / CMakeLists.txt / setup.py declare what the code needs; setup is idempotent.

The dependency checks scan the sources' imports (AST, also imports inside functions), so a new
``import message_filters`` in ``l2cocc_ros/ros`` fails here until package.xml declares it.
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path
from typing import Dict, Iterable, List, Set

import pytest

REPO = Path(__file__).resolve().parents[1]

# Python module -> rosdep key, where they differ or are not ROS packages (checked against ros/rosdistro
# rosdep/python.yaml and jazzy/kilted distribution.yaml). *_msgs / *_interfaces modules map to themselves.
ROSDEP_KEY = {
    "torch": "python3-torch", "numpy": "python3-numpy", "cv2": "python3-opencv", "yaml": "python3-yaml",
    "PIL": "python3-pil", "tqdm": "python3-tqdm",
    "tf2_ros": "tf2_ros_py",  # the Python tf2_ros lives in the package tf2_ros_py
    "rclpy": "rclpy", "ament_index_python": "ament_index_python", "message_filters": "message_filters",
    "cv_bridge": "cv_bridge", "sensor_msgs_py": "sensor_msgs_py", "launch": "launch", "launch_ros": "launch_ros",
    "rosidl_runtime_py": "rosidl_runtime_py", "rosbag2_py": "rosbag2_py",
}


def _package_xml() -> ET.Element:
    return ET.parse(REPO / "package.xml").getroot()


def _deps(root: ET.Element, *tags: str) -> Set[str]:
    return {e.text.strip() for tag in tags for e in root.findall(tag)}


def _setup_kwargs() -> Dict[str, object]:
    """Literal keyword arguments of the setup() call in setup.py."""
    tree = ast.parse((REPO / "setup.py").read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "setup":
            out = {}
            for kw in node.keywords:
                try:
                    out[kw.arg] = ast.literal_eval(kw.value)
                except ValueError:
                    pass
            return out
    raise AssertionError("setup.py has no setup() call")


def _dist_name(requirement: str) -> str:
    return re.split(r"[<>=!~\[; ]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _imports(paths: Iterable[Path]) -> Dict[str, List[str]]:
    """Top-level third-party module -> ["file:line", ...] for the given Python files."""
    stdlib = set(sys.stdlib_module_names) | {"__future__"}
    found: Dict[str, List[str]] = {}
    for path in paths:
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                root = name.split(".")[0]
                if root not in stdlib and root != "l2cocc_ros":
                    found.setdefault(root, []).append(f"{path.relative_to(REPO)}:{node.lineno}")
    return found


def _package_sources() -> List[Path]:
    files = list((REPO / "l2cocc_ros").rglob("*.py")) + list((REPO / "launch").rglob("*.py"))
    return sorted(files) + [REPO / "scripts" / "l2cocc_node"]


def _modules_of(dists: Iterable[str]) -> Set[str]:
    """Top-level modules installed by the given pip distributions (from the venv's metadata)."""
    wanted = {d.lower().replace("_", "-") for d in dists}
    return {mod for mod, owners in importlib.metadata.packages_distributions().items()
            if any(o.lower().replace("_", "-") in wanted for o in owners)}


def test_package_xml_is_an_ament_cmake_interface_package():
    root = _package_xml()
    assert root.get("format") == "3"
    assert root.findtext("name") == "l2cocc_ros"
    import l2cocc_ros
    assert root.findtext("version") == _setup_kwargs()["version"] == l2cocc_ros.__version__
    assert root.findtext("export/build_type") == "ament_cmake"
    assert root.findtext("member_of_group") == "rosidl_interface_packages"
    assert {"ament_cmake", "ament_cmake_python", "rosidl_default_generators"} <= _deps(root, "buildtool_depend")
    assert "rosidl_default_runtime" in _deps(root, "exec_depend", "depend")


def test_messages_and_their_dependencies_are_declared():
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    gen = re.search(r"rosidl_generate_interfaces\((.*?)\)", cmake, re.S).group(1)
    used = set()
    for msg in sorted((REPO / "msg").glob("*.msg")):
        assert f'"msg/{msg.name}"' in gen, f"{msg.name} is not in rosidl_generate_interfaces"
        for line in msg.read_text(encoding="utf-8").splitlines():
            m = re.match(r"\s*([A-Za-z_]\w*)/\w+(\[\d*\])?\s+\w+", line)
            if m:
                used.add(m.group(1))
    assert used, "expected message fields of other packages (std_msgs/Header, geometry_msgs/Pose)"
    declared = _deps(_package_xml(), "depend", "build_depend")
    deps_clause = gen.split("DEPENDENCIES", 1)[1].split()
    for pkg in sorted(used):
        assert pkg in declared, f"package.xml: <depend>{pkg}</depend> missing (used in msg/)"
        assert f"find_package({pkg} REQUIRED)" in cmake, f"CMakeLists.txt: find_package({pkg}) missing"
        assert pkg in deps_clause, f"CMakeLists.txt: {pkg} missing from rosidl DEPENDENCIES"


def test_package_xml_declares_every_imported_dependency():
    """Every third-party import of the package (ros adapters, tools, launch files) has a rosdep key."""
    root = _package_xml()
    declared = _deps(root, "depend", "exec_depend", "build_export_depend")
    optional = _modules_of(d for extra in _setup_kwargs().get("extras_require", {}).values()
                           for d in map(_dist_name, extra))
    missing = []
    for module, where in sorted(_imports(_package_sources()).items()):
        key = module if module.endswith(("_msgs", "_interfaces")) else ROSDEP_KEY.get(module)
        if key is None:
            if module in optional:  # pip-only extras (training, bags, export): `pip install .[train]` etc.
                continue
            missing.append(f"{module}: no rosdep key known; add it to ROSDEP_KEY and package.xml "
                           f"(or to setup.py extras_require if pip-only) - used at {', '.join(where[:3])}")
        elif key not in declared:
            missing.append(f"{module}: package.xml lacks <exec_depend>{key}</exec_depend> - used at {', '.join(where[:3])}")
    assert not missing, "\n".join(missing)


def test_setup_py_covers_core_imports():
    """pip users (no ROS) get everything core needs: install_requires, or an extra for optional parts."""
    kw = _setup_kwargs()
    required = _modules_of(map(_dist_name, kw["install_requires"]))
    extras = _modules_of(d for extra in kw.get("extras_require", {}).values() for d in map(_dist_name, extra))
    missing = [f"{mod} (used at {', '.join(where[:3])})"
               for mod, where in sorted(_imports(sorted((REPO / "l2cocc_ros" / "core").rglob("*.py"))).items())
               if mod not in required | extras]
    assert not missing, "setup.py install_requires/extras_require lack: " + "; ".join(missing)


def test_cmake_installs_python_package_config_launch_and_node():
    cmake = "\n".join(line.split("#", 1)[0] for line in (REPO / "CMakeLists.txt").read_text(encoding="utf-8").splitlines())
    # ament_python_install_package(l2cocc_ros) would collide with the one rosidl_generator_py registers
    assert "ament_python_install_package" not in cmake
    assert re.search(r"install\(DIRECTORY l2cocc_ros/\s+DESTINATION \$\{PYTHON_INSTALL_DIR\}/\$\{PROJECT_NAME\}", cmake)
    assert re.search(r"install\(DIRECTORY config launch DESTINATION share/\$\{PROJECT_NAME\}\)", cmake)
    assert re.search(r"install\(PROGRAMS scripts/l2cocc_node DESTINATION lib/\$\{PROJECT_NAME\}\)", cmake)
    for path in ("config", "launch", "l2cocc_ros"):
        assert (REPO / path).is_dir(), path
    assert os.access(REPO / "scripts" / "l2cocc_node", os.X_OK)
    if "ament_add_pytest_test" in cmake:
        assert "ament_cmake_pytest" in _deps(_package_xml(), "test_depend")
    assert (REPO / "ros_fallback" / "COLCON_IGNORE").exists(), "colcon on a vehicle must use the distro's tf2_msgs"


def test_test_file_names_are_unique():
    """pytest's default (prepend) import mode needs unique basenames across test/ folders without __init__."""
    seen: Dict[str, Path] = {}
    for path in sorted((REPO / "test").rglob("test_*.py")):
        assert path.name not in seen, f"{path} and {seen[path.name]} share a basename"
        seen[path.name] = path


def test_every_entry_point_sets_the_discovery_range():
    make = (REPO / "Makefile").read_text(encoding="utf-8")
    assert re.search(r"^export ROS_AUTOMATIC_DISCOVERY_RANGE\s*:?=\s*LOCALHOST$", make, re.M)
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    assert "export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" in ci and re.search(r"^make test$", ci, re.M)
    assert "ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST" in (REPO / "scripts" / "setup.sh").read_text(encoding="utf-8")
    files = [REPO / "Makefile", REPO / ".ci" / "run"]
    for folder in ("scripts", "l2cocc_ros", "launch", "config", "test", "bench"):
        files += [p for p in (REPO / folder).rglob("*") if p.is_file() and p.suffix in ("", ".py", ".sh", ".xml", ".yaml")]
    setters = [str(p.relative_to(REPO)) for p in files
               if re.search(r"ROS_LOCALHOST_ONLY\s*[=:]", p.read_text(errors="replace"))]
    assert not setters, f"ROS_LOCALHOST_ONLY is ignored by kilted; use ROS_AUTOMATIC_DISCOVERY_RANGE: {setters}"


@pytest.mark.skipif(not (REPO / ".venv").is_dir(), reason="a checkout set up with `make setup` (not a colcon build)")
def test_setup_is_idempotent():
    """A second `scripts/setup.sh` builds and installs nothing and takes seconds."""
    run = lambda: subprocess.run(["bash", "scripts/setup.sh"], cwd=REPO, capture_output=True, text=True, timeout=900)
    first = run()
    assert first.returncode == 0, first.stderr[-3000:]
    t0 = time.monotonic()
    second = run()
    elapsed = time.monotonic() - t0
    assert second.returncode == 0, second.stderr[-3000:]
    assert "building" not in second.stdout and "installing" not in second.stdout, second.stdout
    assert elapsed < 10.0, f"second setup run took {elapsed:.1f} s"


def test_pip_wheel_contains_core_and_console_command(tmp_path):
    """`pip install .` (cluster users without ROS): the wheel has core, the class table YAML and `l2cocc`."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "setup.py").write_text((REPO / "setup.py").read_text(encoding="utf-8"), encoding="utf-8")
    subprocess.run(["cp", "-r", str(REPO / "l2cocc_ros"), str(src / "l2cocc_ros")], check=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path / "dist"), str(src)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wheel,) = (tmp_path / "dist").glob("l2cocc_ros-*.whl")
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
        entry = next(n for n in names if n.endswith("entry_points.txt"))
        assert "l2cocc = l2cocc_ros.tools.cli:main" in zf.read(entry).decode()
    for required in ("l2cocc_ros/core/classes.py", "l2cocc_ros/core/grid.py", "l2cocc_ros/core/semantic-kitti.yaml",
                     "l2cocc_ros/tools/cli.py", "l2cocc_ros/ros/grid_msg.py"):
        assert required in names, required


# Hashes that real Jazzy/Kilted systems report for upstream geometry2's tf2_msgs (`ros2 topic info -v /tf`)
UPSTREAM_TF2_HASHES = {
    "TFMessage": "RIHS01_e369d0f05a23ae52508854b66f6aa0437f3449d652e8cbf22d5abe85d020f087",
    "TF2Error": "RIHS01_db2485e7d6a0ec75bf087e058ee45df682acc3a621ca7780503d10aac141809a",
}


@pytest.mark.parametrize("name", sorted(UPSTREAM_TF2_HASHES))
def test_tf2_msgs_in_use_is_hash_compatible_with_upstream(name):
    """The message-only tf2_msgs (ros_fallback/, built where the distro has none) must match upstream's type hash,
    or TF from real systems would not be received."""
    prefixes = [Path(p) for p in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep) if p]
    found = [p / "share" / "tf2_msgs" / "msg" / f"{name}.json" for p in prefixes]
    found = [f for f in found if f.is_file()]
    assert found, "no tf2_msgs type description on AMENT_PREFIX_PATH (run `make setup` / source scripts/env.sh)"
    hashes = json.loads(found[0].read_text(encoding="utf-8"))["type_hashes"]
    own = next(h["hash_string"] for h in hashes if h["type_name"] == f"tf2_msgs/msg/{name}")
    assert own == UPSTREAM_TF2_HASHES[name], found[0]
