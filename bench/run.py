#!/usr/bin/env python3
"""Benchmark entry point: same as `l2cocc bench` (see l2cocc_ros/tools/bench.py for the sections).

Run from the project environment (`source scripts/env.sh`). On a GPU machine, for example:
    python bench/run.py --engine tiny_l2cocc_c:cuda:20 semantickitti_l2cocc_c:cuda:20 \
        semantickitti_l2cocc_c:cuda:20:bf16 --agreement semantickitti_l2cocc_c:cuda:bf16:channels_last
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

from l2cocc_ros.tools.bench import main  # noqa: E402

sys.exit(main())
