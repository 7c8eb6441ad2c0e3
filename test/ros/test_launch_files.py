"""Launch files without ``ros2 launch``: parse them (ast) and check every parameter they set is declared by the
node, every remap is a node input, the param files they load exist, the included launch gets only arguments
it declares, and the RViz config shows the node's markers in the grid frame. With launch_ros installed, the
launch descriptions are also built for real."""
import ast
import importlib.util

import pytest
import yaml

from l2cocc_ros.ros.params import declared_names, load_param_file

from node_helpers import REPO

LAUNCH = REPO / "launch"
NODE_INPUTS = {"~/input/left/image", "~/input/left/camera_info", "~/input/right/image", "~/input/right/camera_info",
               "~/input/pointcloud"}
BUILTIN_PARAMS = {"use_sim_time"}  # declared by rclpy itself


def calls(tree, name):
    return [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, "id", getattr(n.func, "attr", None)) == name]


def kw(call, name):
    return next((k.value for k in call.keywords if k.arg == name), None)


def parse(name):
    return ast.parse((LAUNCH / name).read_text(encoding="utf-8"))


def declared_arguments(tree):
    return {c.args[0].value for c in calls(tree, "DeclareLaunchArgument")}


def l2cocc_nodes(tree):
    return [c for c in calls(tree, "Node") if isinstance(kw(c, "executable"), ast.Constant)
            and kw(c, "executable").value == "l2cocc_node"]


def test_node_parameters_are_declared_and_param_files_exist():
    tree = parse("l2cocc.launch.py")
    (node,) = l2cocc_nodes(tree)
    params = kw(node, "parameters")
    dict_keys = {k.value for d in params.elts if isinstance(d, ast.Dict) for k in d.keys}
    assert dict_keys <= set(declared_names()) | BUILTIN_PARAMS, dict_keys - set(declared_names())
    assert {"checkpoint", "variant", "preset"} <= dict_keys
    # the param files: default values of the *_param_file arguments, joined under the package share
    files = []
    for c in calls(tree, "DeclareLaunchArgument"):
        default = kw(c, "default_value")
        if c.args[0].value.endswith("param_file"):
            parts = [e.value for e in default.args[0].elts if isinstance(e, ast.Constant)]
            files.append(REPO.joinpath(*parts))
    assert sorted(f.name for f in files) == ["common.param.yaml", "l2cocc_node.param.yaml"]
    loaded = set()
    for f in files:
        loaded |= set(load_param_file(str(f)))
    assert loaded == set(declared_names())  # the files set every declared parameter, nothing else


def test_remaps_are_node_inputs_and_arguments_stay_few():
    tree = parse("l2cocc.launch.py")
    (node,) = l2cocc_nodes(tree)
    remapped = {t.elts[0].value for t in kw(node, "remappings").elts}
    assert remapped == NODE_INPUTS
    args = declared_arguments(tree)
    assert len(args) <= 12 and not (args & (set(declared_names()) - {"checkpoint", "variant", "preset"}))  # no re-declared params
    for c in calls(tree, "LaunchConfiguration"):
        assert c.args[0].value in args, f"LaunchConfiguration({c.args[0].value!r}) is not declared"


def test_replay_launch_includes_the_node_launch_with_declared_arguments():
    replay, node_launch = parse("kitti_replay.launch.py"), parse("l2cocc.launch.py")
    (include,) = calls(replay, "IncludeLaunchDescription")
    launch_args = kw(include, "launch_arguments").func.value  # {...}.items()
    assert {k.value for k in launch_args.keys} <= declared_arguments(node_launch)
    path = [e.value for e in calls(include, "PathJoinSubstitution")[0].args[0].elts if isinstance(e, ast.Constant)]
    assert REPO.joinpath(*path).is_file()
    cmd = kw(calls(replay, "ExecuteProcess")[0], "cmd")
    assert [e.value for e in cmd.elts[:2]] == ["l2cocc", "replay"] and any(
        isinstance(e, ast.Constant) and e.value == "--clock" for e in cmd.elts)
    for c in calls(replay, "LaunchConfiguration"):
        assert c.args[0].value in declared_arguments(replay)


def test_rviz_config_shows_the_markers_in_the_grid_frame():
    cfg = yaml.safe_load((REPO / "config" / "l2cocc.rviz").read_text(encoding="utf-8"))
    manager = cfg["Visualization Manager"]
    grid_frame = load_param_file(str(REPO / "config" / "l2cocc_node.param.yaml"))["grid_frame"]
    assert manager["Global Options"]["Fixed Frame"] == grid_frame
    markers = [d for d in manager["Displays"] if d["Class"] == "rviz_default_plugins/MarkerArray"]
    assert [m["Topic"]["Value"] for m in markers] == ["/l2cocc_node/output/markers"]
    assert markers[0]["Topic"]["Reliability Policy"] == "Reliable"  # the node's output QoS
    (rviz_node,) = [c for c in calls(parse("l2cocc.launch.py"), "Node") if kw(c, "executable").value == "rviz2"]
    parts = [e.value for e in calls(rviz_node, "PathJoinSubstitution")[0].args[0].elts if isinstance(e, ast.Constant)]
    assert REPO.joinpath(*parts) == REPO / "config" / "l2cocc.rviz"


@pytest.mark.skipif(importlib.util.find_spec("launch_ros") is None, reason="launch_ros is not installed here")
@pytest.mark.parametrize("name", ["l2cocc.launch.py", "kitti_replay.launch.py"])
def test_launch_descriptions_build(name):  # pragma: no cover - needs a ROS install
    spec = importlib.util.spec_from_file_location(name.split(".")[0], LAUNCH / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert module.generate_launch_description().entities
