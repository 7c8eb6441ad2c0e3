"""Suite-wide test settings: DDS discovery scope and a helper environment for child processes.

In-process tests run with ``ROS_AUTOMATIC_DISCOVERY_RANGE=OFF``: intra-process pub/sub works and not one
packet leaves the process (reference/ros2-toolchain.md §3.1). A test that starts other processes passes
them ``ros_child_env`` (LOCALHOST) and must itself create its rclpy context under that range
(``ros_localhost`` fixture), because rcl reads the variable at ``rclpy.init``.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Iterator

import pytest

REPO = Path(__file__).resolve().parents[1]

# Set before any test module can call rclpy.init(): nothing in the suite uses the default (SUBNET) range.
os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "OFF"
os.environ.pop("ROS_LOCALHOST_ONLY", None)  # ignored by kilted anyway; never rely on it
os.environ.setdefault("FASTDDS_DEFAULT_PROFILES_FILE", str(REPO / "config" / "fastdds_large_messages.xml"))


@pytest.fixture
def ros_child_env() -> Dict[str, str]:
    """Environment for a child process that talks DDS to this one: discovery on loopback only."""
    env = dict(os.environ)
    env["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    env["PYTHONUNBUFFERED"] = "1"
    return env


@pytest.fixture
def ros_localhost(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Run the test's own rclpy context with LOCALHOST discovery (to reach child processes)."""
    monkeypatch.setenv("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
    yield
