#!/usr/bin/env bash
# Install the Debian packages vuinspect's tests, demo and benchmarks use.
# Idempotent: skips apt entirely when every tool is already present.
set -euo pipefail

PKGS=(
  qemu-system-x86 qemu-system-common qemu-utils   # QEMU, qemu-storage-daemon, virtiofsd
  linux-image-amd64 busybox-static cpio           # the small guest (kernel + initramfs)
  dpdk-dev                                        # dpdk-testpmd (net_vhost back-end)
  tshark termshark                                # Wireshark CLI for the Lua dissector
  wireshark xvfb xdotool imagemagick tesseract-ocr tesseract-ocr-eng  # the GUI test (Qt under Xvfb, read by OCR)
  lua5.2 lua5.4                                   # luac -p checks for both Lua versions
  socat tmux                                      # benchmark baseline, terminal tests
)

need=0
for tool in qemu-system-x86_64 qemu-storage-daemon dpdk-testpmd tshark luac5.2 luac5.4 socat busybox cpio tmux termshark \
            wireshark Xvfb xdotool import convert tesseract; do
  command -v "$tool" >/dev/null 2>&1 || { need=1; break; }
done
ls /boot/vmlinuz-* >/dev/null 2>&1 || need=1
ls /usr/share/tesseract-ocr/*/tessdata/eng.traineddata >/dev/null 2>&1 || need=1
[ -x /usr/lib/qemu/virtiofsd ] || need=1

if [ "$need" = 0 ]; then
  echo "install-system-deps: all present"
  exit 0
fi

SUDO=""
[ "$(id -u)" = 0 ] || SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
echo "wireshark-common wireshark-common/install-setuid boolean false" | $SUDO debconf-set-selections
$SUDO apt-get update -q
$SUDO apt-get install -y -q --no-install-recommends "${PKGS[@]}"
