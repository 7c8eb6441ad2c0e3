"""Launch l2cocc_node (and optionally RViz with the shipped view).

Only a few arguments (style rule 19): the checkpoint (its variant and preset come from the file; the authors'
.ckpt files record neither: give preset, and variant if you like),
the two param files, the input topic remaps and RViz. Everything else comes from the param files.

    ros2 launch l2cocc_ros l2cocc.launch.py rviz:=true             # the shipped camera model
    ros2 launch l2cocc_ros l2cocc.launch.py checkpoint:=/path/model.pt   # variant and preset from the file
    ros2 launch l2cocc_ros l2cocc.launch.py checkpoint:=/path/authors.ckpt preset:=semantickitti_l2cocc_d
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration, PathJoinSubstitution
from launch_ros.actions import Node
from launch_ros.substitutions import FindPackageShare


def generate_launch_description():
    share = FindPackageShare("l2cocc_ros")
    arguments = [
        DeclareLaunchArgument("checkpoint", default_value="",
                              description="model weights; empty: the shipped camera model"),
        DeclareLaunchArgument("variant", default_value="", choices=["", "c", "d", "l"],
                              description="empty: as the checkpoint records (l needs the point cloud)"),
        DeclareLaunchArgument("preset", default_value="",
                              description="empty: as the checkpoint records; needed for the authors' .ckpt files"),
        DeclareLaunchArgument("node_param_file",
                              default_value=PathJoinSubstitution([share, "config", "l2cocc_node.param.yaml"]),
                              description="runtime parameters of the node"),
        DeclareLaunchArgument("common_param_file",
                              default_value=PathJoinSubstitution([share, "config", "common.param.yaml"]),
                              description="diagnostics thresholds"),
        DeclareLaunchArgument("left_image", default_value="/kitti/camera_color_left/image_raw"),
        DeclareLaunchArgument("left_camera_info", default_value="/kitti/camera_color_left/camera_info"),
        DeclareLaunchArgument("right_image", default_value="/kitti/camera_color_right/image_raw"),
        DeclareLaunchArgument("right_camera_info", default_value="/kitti/camera_color_right/camera_info"),
        DeclareLaunchArgument("pointcloud", default_value="/kitti/velodyne_points"),
        DeclareLaunchArgument("use_sim_time", default_value="false", description="true when replaying a bag with /clock"),
        DeclareLaunchArgument("rviz", default_value="false", description="start RViz with config/l2cocc.rviz"),
    ]
    node = Node(
        package="l2cocc_ros",
        executable="l2cocc_node",
        name="l2cocc_node",
        output="screen",
        parameters=[
            LaunchConfiguration("node_param_file"),
            LaunchConfiguration("common_param_file"),
            {
                "checkpoint": LaunchConfiguration("checkpoint"),
                "variant": LaunchConfiguration("variant"),
                "preset": LaunchConfiguration("preset"),
                "use_sim_time": LaunchConfiguration("use_sim_time"),
            },
        ],
        remappings=[
            ("~/input/left/image", LaunchConfiguration("left_image")),
            ("~/input/left/camera_info", LaunchConfiguration("left_camera_info")),
            ("~/input/right/image", LaunchConfiguration("right_image")),
            ("~/input/right/camera_info", LaunchConfiguration("right_camera_info")),
            ("~/input/pointcloud", LaunchConfiguration("pointcloud")),
        ],
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        name="rviz2",
        arguments=["-d", PathJoinSubstitution([share, "config", "l2cocc.rviz"])],
        parameters=[{"use_sim_time": LaunchConfiguration("use_sim_time")}],
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return LaunchDescription(arguments + [node, rviz])
