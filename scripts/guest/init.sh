#!/bin/sh
# /init of the vuinspect test guest (busybox-static).  Reads vutest=blk|fs|net
# from the kernel command line, does that device's I/O, prints one verdict
# line (VUTEST-<DEV>-OK ... or VUTEST-<DEV>-FAIL <why>) and powers off.
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev

test_kind=none
seed=vuinspect
size_kib=1024
for word in $(cat /proc/cmdline); do
  case "$word" in
    vutest=*) test_kind=${word#vutest=} ;;
    vuseed=*) seed=${word#vuseed=} ;;
    vusize=*) size_kib=${word#vusize=} ;;
  esac
done

load() { for m in "$@"; do insmod "/lib/modules/$m.ko" 2>/dev/null; done; }
load virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci

finish() { echo "$1"; sync; poweroff -f; sleep 10; }

wait_for() {  # wait_for PATH SECONDS
  n=0
  while [ ! -e "$1" ] && [ "$n" -lt $(($2 * 10)) ]; do usleep 100000; n=$((n + 1)); done
  [ -e "$1" ]
}

# The pattern: the line "<seed> <n>" repeated, cut to size_kib KiB.  The host
# regenerates it byte for byte (vuinspect.demo.guest.pattern) to check the disk.
make_pattern() {
  i=0
  while [ $((i * 4096)) -lt $((size_kib * 1024)) ]; do
    yes "$seed $i" | head -c 4096
    i=$((i + 1))
  done
}

case "$test_kind" in
  blk)
    load virtio_blk
    wait_for /dev/vda 10 || finish "VUTEST-BLK-FAIL no /dev/vda"
    make_pattern > /tmp/pattern
    want=$(sha256sum < /tmp/pattern | cut -d' ' -f1)
    dd if=/tmp/pattern of=/dev/vda bs=64k oflag=direct conv=fsync 2>/dev/null \
      || finish "VUTEST-BLK-FAIL write"
    sync
    echo 3 > /proc/sys/vm/drop_caches
    got=$(dd if=/dev/vda bs=64k count=$((size_kib / 64)) iflag=direct 2>/dev/null | sha256sum | cut -d' ' -f1)
    [ "$got" = "$want" ] && finish "VUTEST-BLK-OK $got" || finish "VUTEST-BLK-FAIL read $got want $want"
    ;;
  fs)
    load fuse virtiofs
    mkdir -p /mnt
    n=0
    until mount -t virtiofs share /mnt 2>/dev/null; do
      n=$((n + 1)); [ "$n" -gt 50 ] && finish "VUTEST-FS-FAIL mount"; usleep 100000
    done
    make_pattern > /mnt/vutest.txt || finish "VUTEST-FS-FAIL write"
    sync
    got=$(sha256sum < /mnt/vutest.txt | cut -d' ' -f1)
    umount /mnt || finish "VUTEST-FS-FAIL umount"
    finish "VUTEST-FS-OK $got"
    ;;
  net)
    load failover net_failover virtio_net
    wait_for /sys/class/net/eth0 10 || finish "VUTEST-NET-FAIL no eth0"
    ip link set eth0 up || finish "VUTEST-NET-FAIL link up"
    finish "VUTEST-NET-OK $(cat /sys/class/net/eth0/address)"
    ;;
  *)
    finish "VUTEST-NONE-OK"
    ;;
esac
