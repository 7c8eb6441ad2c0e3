"""Dataset I/O and preprocessing: SemanticKITTI / KITTI-360 readers, label rules, datasets.

Sub-modules are imported explicitly (``from l2cocc_ros.core.data import kitti_io``) so that the file
readers and writers can be used without importing torch.
"""
__all__ = ["kitti_io", "labels", "semantic_kitti", "kitti360"]
