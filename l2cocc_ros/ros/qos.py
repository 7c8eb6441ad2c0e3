"""The QoS profiles of the project's topics, in one place (style guide rule 12).

- sensor inputs (images, camera info, point clouds): best effort, keep last 5 (``SENSOR_QOS``);
- outputs (grid, markers, debug values): reliable, keep last 1, volatile (``OUTPUT_QOS``), so a slow
  subscriber gets the newest grid and nothing queues up;
- ``/tf_static``: reliable, transient local, keep last 1 (``TF_STATIC_QOS``), so late joiners get it;
  ``/tf``: reliable, keep last 100 (``TF_QOS``), as tf2_ros.
"""
from __future__ import annotations

from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)

__all__ = ["SENSOR_QOS", "OUTPUT_QOS", "TF_QOS", "TF_STATIC_QOS"]

SENSOR_QOS: QoSProfile = qos_profile_sensor_data

OUTPUT_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

TF_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=100,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.VOLATILE,
)

TF_STATIC_QOS = QoSProfile(
    history=HistoryPolicy.KEEP_LAST,
    depth=1,
    reliability=ReliabilityPolicy.RELIABLE,
    durability=DurabilityPolicy.TRANSIENT_LOCAL,
)
