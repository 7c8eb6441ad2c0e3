# l2cocc_ros: the two commands (README) and their helpers.
# Every process started from here that may start rclpy gets ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST.
SHELL := /bin/bash
export ROS_AUTOMATIC_DISCOVERY_RANGE ?= LOCALHOST
ENV := source scripts/env.sh &&
PYTEST_ARGS ?=

.PHONY: setup test demo clean

setup:
	bash scripts/setup.sh

test: setup
	$(ENV) python -P -m pytest test $(PYTEST_ARGS)

demo: setup
	$(ENV) python -P -m l2cocc_ros.tools.demo

clean:
	rm -rf .ros build install log demo_out
