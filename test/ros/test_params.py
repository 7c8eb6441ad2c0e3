"""Parameters: the shipped YAML files set exactly the declared parameters, match the schemas, and every invalid
configuration is refused at start-up with a message naming the parameter."""
import json
import os

import pytest
import rclpy

from l2cocc_ros.ros.params import PARAMS, REQUIRED, config_from_values, declared_names, json_schema, load_param_file

from node_helpers import COMMON_YAML, NODE_YAML, REPO, param_values, parameters


def test_yaml_keys_equal_the_declared_parameters():
    assert set(load_param_file(str(NODE_YAML))) == set(declared_names("node"))
    assert set(load_param_file(str(COMMON_YAML))) == set(declared_names("common"))
    assert len(set(declared_names())) == len(PARAMS)


@pytest.mark.parametrize("file, path", [("node", "schema/l2cocc_node.schema.json"), ("common", "schema/common.schema.json")])
def test_schema_files_are_generated_from_the_table(file, path):
    with open(REPO / path, encoding="utf-8") as f:
        assert json.load(f) == json_schema(file), f"regenerate {path} from l2cocc_ros.ros.params.json_schema"


def _validate(value, schema, where, errors):
    """A small draft-07 subset validator (type, enum, range, items, required, additionalProperties)."""
    kinds = {"object": dict, "string": str, "boolean": bool, "integer": int, "number": (int, float), "array": list}
    if not isinstance(value, kinds[schema["type"]]) or (schema["type"] in ("integer", "number") and isinstance(value, bool)):
        errors.append(f"{where}: {value!r} is not {schema['type']}")
        return
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: {value!r} not in {schema['enum']}")
    if "minimum" in schema and not schema["minimum"] <= value <= schema["maximum"]:
        errors.append(f"{where}: {value} outside range")
    if schema["type"] == "array":
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", 1 << 30):
            errors.append(f"{where}: wrong length {len(value)}")
        for i, item in enumerate(value):
            _validate(item, schema["items"], f"{where}[{i}]", errors)
    if schema["type"] == "object":
        for key in schema["required"]:
            if key not in value:
                errors.append(f"{where}.{key}: missing")
        for key, item in value.items():
            if key not in schema["properties"]:
                errors.append(f"{where}.{key}: not in the schema")
            else:
                _validate(item, schema["properties"][key], f"{where}.{key}", errors)


@pytest.mark.parametrize("file, path", [("node", NODE_YAML), ("common", COMMON_YAML)])
def test_yaml_files_satisfy_their_schema(file, path):
    import yaml

    with open(path, encoding="utf-8") as f:
        doc = yaml.safe_load(f)
    schema = json_schema(file)
    errors = []
    _validate(doc["/**"]["ros__parameters"], schema["definitions"]["params"], "ros__parameters", errors)
    assert errors == []
    # and the validator does catch a bad file
    doc["/**"]["ros__parameters"].setdefault("sync", {})["queue_size"] = 0
    errors = []
    _validate(doc["/**"]["ros__parameters"], schema["definitions"]["params"], "ros__parameters", errors)
    assert errors


def test_defaults_only_for_optional_parameters():
    optional = {p.name for p in PARAMS if p.default is not REQUIRED}
    assert optional == ({"variant", "preset", "allow_random_weights", "markers.alpha", "fast.channels_last",
                         "fast.cuda_graphs", "fast.device_preprocess"}
                        | set(declared_names("common")))


@pytest.mark.parametrize("overrides, phrase", [
    (dict(variant="x"), "variant: 'x' is not one of"),
    (dict(preset="tiny_l2cocc_d"), "preset: 'tiny_l2cocc_d' is variant 'd', but variant is 'c'"),
    (dict(preset="nope"), "unknown config preset 'nope'"),
    (dict(preset=""), "preset: empty; random weights"),
    (dict(stereo__num_disparities=20), "multiple of 16"),
    (dict(stereo__backend="psmnet"), "unknown stereo backend 'psmnet'"),
    (dict(stereo__backend="msnet3d"), "stereo.weights: empty, but stereo.backend msnet3d needs its weights file; "
                                      "MSNet3D_SF_DS_KITTI2015.ckpt"),
    (dict(stereo__backend="msnet2d", stereo__weights="/nonexistent/msnet.ckpt"),
     "stereo.weights: file not found: /nonexistent/msnet.ckpt; MSNet3D_SF_DS_KITTI2015.ckpt"),
    (dict(device="tpu"), "device: device must be"),
    (dict(sync__slop_s=2.0), "sync.slop_s: 2.0 is outside [0.0, 1.0]"),
    (dict(markers__crop_min=[0.0, 30.0, -2.0]), "must be below markers.crop_max"),
    (dict(tf__fallback_rotation=[0.0, 0.0, 1.0]), "tf.fallback_rotation: expected 4 values"),
    (dict(tf__use_fallback=True, tf__fallback_rotation=[0.0, 0.0, 0.0, 0.0]), "quaternion must not be zero"),
    (dict(markers__max_rate_hz="fast"), "markers.max_rate_hz: expected double"),
])
def test_invalid_values_are_refused_naming_the_parameter(overrides, phrase):
    with pytest.raises(ValueError) as err:
        config_from_values(param_values(**overrides))
    assert phrase in str(err.value)


def test_every_missing_parameter_is_listed_at_once():
    values = param_values()
    del values["grid_frame"], values["sync.queue_size"]
    with pytest.raises(ValueError) as err:
        config_from_values(values)
    assert "grid_frame: required parameter is not set" in str(err.value)
    assert "sync.queue_size: required parameter is not set" in str(err.value)


def test_missing_checkpoint_file():
    with pytest.raises(FileNotFoundError, match="checkpoint: file not found: /nonexistent/model.ckpt"):
        config_from_values(param_values(checkpoint="/nonexistent/model.ckpt"))


def test_valid_config_and_fallback_transform():
    cfg = config_from_values(param_values(tf__use_fallback=True, tf__fallback_translation=[1.0, 2.0, 3.0]))
    assert cfg.tf_fallback[:3, 3].tolist() == [1.0, 2.0, 3.0] and cfg.variant == "c"
    assert cfg.stereo_options == {"num_disparities": 32, "block_size": 5, "downscale": 1}
    weights = REPO / "README.md"  # any existing file: the weights are read by the node, not by the validation
    cfg = config_from_values(param_values(stereo__backend="msnet3d", stereo__weights=str(weights)))
    assert cfg.stereo_options == {"weights": str(weights), "precision": "fp32"}
    assert cfg.diagnostics.max_processing_time_warn_ms == 200.0


def test_node_refuses_bad_parameters_before_building_anything():
    from l2cocc_ros.ros.node import L2COccNode

    ctx = rclpy.Context()
    rclpy.init(context=ctx)
    try:
        with pytest.raises(ValueError, match="sync.queue_size"):  # rclpy's range check at declaration
            L2COccNode(context=ctx, parameter_overrides=parameters(sync__queue_size=0))
        bad = [p for p in parameters() if p.name != "grid_frame"]
        with pytest.raises(ValueError, match="grid_frame: required parameter is not set"):
            L2COccNode(context=ctx, parameter_overrides=bad)
    finally:
        rclpy.shutdown(context=ctx)


def test_main_exits_with_2_on_invalid_parameters(tmp_path):
    import subprocess
    import sys

    env = dict(os.environ, ROS_AUTOMATIC_DISCOVERY_RANGE="OFF")
    proc = subprocess.run([sys.executable, "-P", "-m", "l2cocc_ros.ros.node", "--ros-args", "--params-file",
                           str(NODE_YAML), "--params-file", str(COMMON_YAML), "-p", "sync.queue_size:=0"],
                          env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert "sync.queue_size" in proc.stderr


def test_help_lists_topics_and_param_files(capsys):
    from l2cocc_ros.ros.node import main

    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    assert "~/output/semantic_grid" in out and "config/l2cocc_node.param.yaml" in out


def test_node_without_msnet_weights_exits_2_with_one_line_and_no_traceback(ros_child_env):
    import subprocess
    import sys

    from node_helpers import ros_args

    cmd = [sys.executable, "-P", "-m", "l2cocc_ros.ros.node", *ros_args(stereo__backend="msnet3d")]
    done = subprocess.run(cmd, cwd=REPO, env=ros_child_env, capture_output=True, text=True, timeout=120)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out
    assert "Traceback" not in out
    errors = [line for line in out.splitlines() if "stereo.weights" in line]
    assert len(errors) == 1 and "MSNet3D_SF_DS_KITTI2015.ckpt" in errors[0] and "VoxFormer" in errors[0], out


@pytest.mark.parametrize("shut_down", [True, False])
def test_an_error_from_spin_is_a_normal_exit_only_after_shutdown(monkeypatch, shut_down):
    """A signal can shut the context down while ``rclpy.spin`` builds its wait set: rclpy then raises RCLError
    (a RuntimeError) instead of ExternalShutdownException. That is a normal exit; the same error on a live
    context is not."""
    import rclpy

    from l2cocc_ros.ros import node as node_module

    class NoNode:
        def destroy_node(self):
            pass

    def spin(_node):
        if shut_down:
            rclpy.shutdown()
        raise RuntimeError("failed to initialize wait set: the given context is not valid")

    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "OFF")
    monkeypatch.setattr(node_module, "L2COccNode", NoNode)
    monkeypatch.setattr(rclpy, "spin", spin)
    if shut_down:
        assert node_module.main([]) == 0
    else:
        with pytest.raises(RuntimeError, match="wait set"):
            node_module.main([])
    assert not rclpy.ok()
