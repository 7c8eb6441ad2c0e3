"""Replay a KITTI bag (``l2cocc kitti2bag``) into l2cocc_node on simulated time, with RViz.

    ros2 launch l2cocc_ros kitti_replay.launch.py bag:=seq08.mcap checkpoint:=/path/model.pt

The player is ``l2cocc replay BAG --clock``: it publishes /clock and the bag's topics (raw CDR, /tf_static
latched) once the node subscribes to the left image. The node runs with use_sim_time, so its
pipeline latency is measured against the bag's clock.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, ExecuteProcess, IncludeLaunchDescription
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare("l2cocc_ros")
    arguments = [
        DeclareLaunchArgument("bag", description="rosbag2 directory or .mcap written by l2cocc kitti2bag"),
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="model weights; empty: the shipped camera model"),
        DeclareLaunchArgument("variant", default_value="", choices=["", "c", "d", "l"],
                              description="empty: as the checkpoint records"),
        DeclareLaunchArgument("rate", default_value="1.0", description="playback speed factor"),
        DeclareLaunchArgument("rviz", default_value="true"),
    ]
    node = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(PathJoinSubstitution([share, "launch", "l2cocc.launch.py"])),
        launch_arguments={
            "checkpoint": LaunchConfiguration("checkpoint"),
            "variant": LaunchConfiguration("variant"),
            "use_sim_time": "true",
            "rviz": LaunchConfiguration("rviz"),
        }.items(),
    )
    player = ExecuteProcess(
        cmd=["l2cocc", "replay", LaunchConfiguration("bag"), "--clock", "--rate", LaunchConfiguration("rate"),
             "--wait-for", "/kitti/camera_color_left/image_raw"],
        output="screen",
    )
    return LaunchDescription(arguments + [node, player])
