#!/usr/bin/env bash
# Build the small test guest (Debian kernel + busybox initramfs) for `vuinspect demo`
# and tests/realworld.  Idempotent: the result is cached under
#   ${XDG_CACHE_HOME:-~/.cache}/vuinspect/guest/<key>/{vmlinuz,initramfs.cpio.gz}
# where <key> hashes this script, guest/init.sh and the kernel version, so editing
# either rebuilds.  Prints the cache directory on stdout (last line).
# Needs only what scripts/install-system-deps.sh installs (linux-image-amd64,
# busybox-static, cpio).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
init_script="$here/guest/init.sh"
modules=(virtio_ring virtio virtio_pci_modern_dev virtio_pci_legacy_dev virtio_pci
         virtio_blk failover net_failover virtio_net fuse virtiofs)

die() { echo "build-guest: $*" >&2; exit 1; }

kernel=${VUINSPECT_KERNEL:-$(ls -1 /boot/vmlinuz-* 2>/dev/null | sort -V | tail -n1 || true)}
[ -n "$kernel" ] && [ -r "$kernel" ] || die "no readable /boot/vmlinuz-*: run scripts/install-system-deps.sh"
kver=${kernel#*/vmlinuz-}
moddir=/lib/modules/$kver
[ -r "$moddir/modules.dep" ] || die "no $moddir/modules.dep for kernel $kver"
busybox=$(command -v busybox || true)
[ -n "$busybox" ] || die "busybox not found: run scripts/install-system-deps.sh"
# The initramfs has no libc: only Debian's busybox-static runs there (it replaces the dynamic one).
if command -v dpkg >/dev/null && ! dpkg -s busybox-static >/dev/null 2>&1; then
  die "busybox-static is not installed: run scripts/install-system-deps.sh"
fi
command -v cpio >/dev/null || die "cpio not found: run scripts/install-system-deps.sh"

key=$(cat "${BASH_SOURCE[0]}" "$init_script" <(echo "$kver") | sha256sum | cut -c1-16)
cache=${XDG_CACHE_HOME:-$HOME/.cache}/vuinspect/guest
out=$cache/$key
if [ -s "$out/vmlinuz" ] && [ -s "$out/initramfs.cpio.gz" ]; then
  echo "$out"
  exit 0
fi

work=$(mktemp -d "${TMPDIR:-/tmp}/vuguest.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root
mkdir -p "$root"/{bin,dev,proc,sys,tmp,mnt,lib/modules}
cp "$busybox" "$root/bin/busybox"
for applet in $("$busybox" --list); do
  [ "$applet" = busybox ] || ln -sf busybox "$root/bin/$applet"
done
install -m 0755 "$init_script" "$root/init"

# Copy each module (resolving modules.dep, decompressing .xz/.zst) as lib/modules/<name>.ko;
# init.sh loads them in dependency order itself.
for m in "${modules[@]}"; do
  rel=$(grep -E "(^|/)${m}\.ko(\.xz|\.zst|\.gz)?:" "$moddir/modules.dep" | head -n1 | cut -d: -f1)
  [ -n "$rel" ] || die "module $m not in $moddir/modules.dep"
  src=$moddir/$rel
  dst=$root/lib/modules/$m.ko
  case "$src" in
    *.ko) cp "$src" "$dst" ;;
    *.ko.xz) xz -dc "$src" > "$dst" ;;
    *.ko.zst) zstd -qdc "$src" > "$dst" ;;
    *.ko.gz) gzip -dc "$src" > "$dst" ;;
  esac
done

mkdir -p "$out.tmp"
cp "$kernel" "$out.tmp/vmlinuz"
(cd "$root" && find . -print0 | sort -z | cpio --null -o -H newc --quiet) | gzip -9 > "$out.tmp/initramfs.cpio.gz"
echo "$kver" > "$out.tmp/kernel-version"
rm -rf "$out"
mv "$out.tmp" "$out"
# Older builds (other keys) are stale once this one exists.
find "$cache" -mindepth 1 -maxdepth 1 ! -name "$key" ! -name "$key.tmp" -exec rm -rf {} +
echo "$out"
