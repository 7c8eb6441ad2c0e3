"""l2cocc_ros: L2COcc semantic scene completion for ROS 2.

Sub-packages: ``core`` (ROS-free model, data, training, engine), ``ros`` (rclpy adapters), ``tools`` (CLIs).
"""
# In a source checkout the generated message module (l2cocc_ros.msg) lives in the rosidl install tree, not
# here; let both directories form one package so `from l2cocc_ros.msg import SemanticVoxelGrid` works.
from pkgutil import extend_path

__path__ = extend_path(__path__, __name__)
__version__ = "0.1.0"
