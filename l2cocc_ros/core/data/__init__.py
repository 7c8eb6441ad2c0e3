"""Dataset I/O and training data: SemanticKITTI / KITTI-360 readers, label rules, datasets, training colour
jitter (``augment``) and the LiDAR depth target (``depth_target``).

Sub-modules are imported explicitly (``from l2cocc_ros.core.data import kitti_io``) so that the file
readers and writers can be used without importing torch.
"""
__all__ = ["kitti_io", "labels", "semantic_kitti", "kitti360", "augment", "depth_target"]
