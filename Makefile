# l2cocc_ros: the two commands (README) and their helpers.
# Every process started from here that may start rclpy gets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST (the test
# suite narrows it to OFF for in-process tests, test/conftest.py). ROS_LOCALHOST_ONLY is ignored by kilted.
SHELL := /bin/bash
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
unexport ROS_LOCALHOST_ONLY
ENV := source scripts/env.sh &&
PYTEST_ARGS ?=

.PHONY: setup test demo clean

# venv + ROS wheels + message build + scripts/env.sh; a second run takes well under a second
setup:
	bash scripts/setup.sh

# the whole suite; any pytest failure, including exit 5 ("no tests collected"), fails the target
test: setup
	$(ENV) python -P -m pytest test $(PYTEST_ARGS)

demo: setup
	$(ENV) python -P -m l2cocc_ros.tools.demo

clean:
	rm -rf .ros build install log demo_out
