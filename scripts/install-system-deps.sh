#!/usr/bin/env bash
# Installs the synthesizers and the three GM sample libraries that training data is rendered from
# (Debian packages). Does nothing when they are already there.
set -euo pipefail
need=()
command -v fluidsynth >/dev/null || need+=(fluidsynth)
command -v timidity >/dev/null || need+=(timidity)
[ -f /usr/share/sounds/sf2/FluidR3_GM.sf2 ] || need+=(fluid-soundfont-gm)
[ -f /usr/share/sounds/sf2/TimGM6mb.sf2 ] || need+=(timgm6mb-soundfont)
[ -f /etc/timidity/freepats.cfg ] || need+=(freepats)
[ ${#need[@]} -eq 0 ] && exit 0
sudo=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null; then sudo="sudo"; else
    echo "missing system packages: ${need[*]}; install them as root: apt-get install -y ${need[*]}" >&2
    exit 1
  fi
fi
echo "installing system packages: ${need[*]}"
$sudo apt-get update -q
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q --no-install-recommends "${need[@]}"
