#!/usr/bin/env bash
# Installs fast3r-ns (editable) with nerfstudio; `./install.sh test` adds the test extras.
# On Debian/Ubuntu it first installs the system libraries nerfstudio needs when they are missing:
# libusb-1.0-0 (open3d's import) and ffmpeg (nerfstudio's image and video tools); for `test` also chromium
# (the viewer test takes a screenshot with headless Chromium).
set -euo pipefail
cd "$(dirname "$0")"
extra=${1:-nerfstudio}
missing=()
if command -v dpkg-query >/dev/null; then
  dpkg-query -W -f='${Status}' libusb-1.0-0 2>/dev/null | grep -q "ok installed" || missing+=(libusb-1.0-0)
  command -v ffmpeg >/dev/null || missing+=(ffmpeg)
  if [ "$extra" = test ]; then
    command -v chromium >/dev/null || missing+=(chromium)
  fi
fi
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "install.sh: installing ${missing[*]} with apt-get"
  $sudo apt-get update -qq && $sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
fi
python3 -m pip install -q -e ".[$extra]"
