"""pip installation of l2cocc_ros without ROS (core model, training, tools, the `l2cocc` command).

On a ROS 2 machine use colcon instead: package.xml + CMakeLists.txt build the message and install
the same Python package next to it.
"""
from setuptools import find_packages, setup

setup(
    name="l2cocc_ros",
    version="0.1.0",
    description="L2COcc semantic scene completion: model, training, evaluation and ROS 2 tools",
    license="Apache-2.0",
    python_requires=">=3.10",
    packages=find_packages(include=["l2cocc_ros", "l2cocc_ros.*"]),
    package_data={"l2cocc_ros": ["core/*.yaml", "checkpoints/*"]},
    install_requires=[
        "torch>=2.4",
        "numpy>=1.26",
        "pyyaml",
        "pillow",
        "opencv-python-headless",
        "tqdm",
    ],
    extras_require={
        "train": ["lightning>=2.4", "tensorboard"],
        "bag": ["rosbags>=0.11"],
        "export": ["onnx", "onnxruntime"],
    },
    entry_points={"console_scripts": ["l2cocc = l2cocc_ros.tools.cli:main"]},
)
