#!/usr/bin/env bash
# Builds the guest image for the OpenZFS tier once: Debian bookworm with its
# stock kernel, zfs-dkms and zfsutils-linux from contrib (DKMS builds the
# module for the guest kernel during the install, about 4 minutes). The image
# is cached in the machine-wide cache (hack/cache-dir.sh) under
# openzfs/<recipe hash>/ and rebuilt only when this
# script or the guest files change. Prints the image folder, and nothing else,
# on stdout: every tool's chatter goes to stderr (mkfs.ext4 -q still prints
# "Creating regular file" on stdout, which once ended up in the image path).
set -euo pipefail
exec 3>&1 1>&2
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
hash=$(cat "$here/build-image.sh" "$here"/guest/* | sha256sum | cut -c1-12)
out=$("$root/hack/cache-dir.sh")/openzfs/$hash
if [ -f "$out/disk.img" ] && [ -f "$out/vmlinuz" ] && [ -f "$out/initrd.img" ]; then
	echo "$out" >&3
	exit 0
fi
log() { echo "openzfs image: $*" >&2; }
mkdir -p "$out"
rootfs=$out/rootfs
for p in qemu-system-x86_64:qemu-system-x86 debootstrap:debootstrap mkfs.ext4:e2fsprogs; do
	command -v "${p%%:*}" >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${p#*:}" qemu-utils >&2
done

# The host's own apt mirror for bookworm (this machine reaches no other).
mirror=$(awk '/^URIs:/{u=$2} /^Suites:/{if ($0 ~ /bookworm( |$)/) {print u; exit}}' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
[ -n "$mirror" ] || mirror=$(awk '$1=="deb" && $3=="bookworm" {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
[ -n "$mirror" ] || { log "no bookworm mirror in the host's apt configuration"; exit 1; }

cleanup() {
	for m in dev/pts dev sys proc; do mountpoint -q "$rootfs/$m" && umount -l "$rootfs/$m" || true; done
}
trap cleanup EXIT
start=$SECONDS
if [ ! -x "$rootfs/bin/bash" ]; then
	debootstrap --arch=amd64 --components=main,contrib bookworm "$rootfs" "$mirror" >&2
fi
printf 'Types: deb\nURIs: %s\nSuites: bookworm bookworm-updates\nComponents: main contrib\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$mirror" \
	>"$rootfs/etc/apt/sources.list.d/debian.sources"
rm -f "$rootfs/etc/apt/sources.list"
printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
chmod +x "$rootfs/usr/sbin/policy-rc.d"
mount -t proc proc "$rootfs/proc"
mount -t sysfs sys "$rootfs/sys"
mount --bind /dev "$rootfs/dev"
mount -t devpts devpts "$rootfs/dev/pts"
ch() { chroot "$rootfs" env DEBIAN_FRONTEND=noninteractive LC_ALL=C PATH=/usr/sbin:/usr/bin:/sbin:/bin "$@"; }
ch apt-get update -q >&2
ch apt-get install -y -q --no-install-recommends linux-image-amd64 linux-headers-amd64 dkms build-essential udev kmod procps util-linux e2fsprogs >&2
ch apt-get install -y -q --no-install-recommends zfs-dkms zfsutils-linux >&2
kver=$(ls "$rootfs/lib/modules" | sort -V | tail -n1)
if ! ch dkms status -k "$kver" | grep -q installed; then ch dkms autoinstall -k "$kver" >&2; fi
ch dkms status -k "$kver" | grep -q installed || { log "zfs module not built for $kver"; exit 1; }
echo dotmesh-guest >"$rootfs/etc/hostname"
echo "127.0.0.1 localhost dotmesh-guest" >"$rootfs/etc/hosts"
echo "/dev/vda / ext4 rw,errors=remount-ro 0 1" >"$rootfs/etc/fstab"
install -m 755 "$here/guest/dotmesh-guest-run" "$rootfs/usr/local/sbin/dotmesh-guest-run"
install -m 644 "$here/guest/dotmesh-tests.service" "$rootfs/etc/systemd/system/dotmesh-tests.service"
ch systemctl enable dotmesh-tests.service >&2
# Nothing in the guest should reach for a network it does not have, and
# pools are imported by the tests, never at boot.
ch systemctl mask apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer man-db.timer \
	zfs-import-cache.service zfs-import-scan.service zfs-mount.service zfs-share.service zfs-zed.service >&2 || true
ch apt-get clean
rm -f "$rootfs/usr/sbin/policy-rc.d"
cleanup
cp "$rootfs/boot/vmlinuz-$kver" "$out/vmlinuz"
cp "$rootfs/boot/initrd.img-$kver" "$out/initrd.img"
mkfs.ext4 -q -F -L guestroot -d "$rootfs" "$out/disk.img.tmp" 6G
mv "$out/disk.img.tmp" "$out/disk.img"
rm -rf "$rootfs"
log "built in $((SECONDS - start))s (kernel $kver)"
echo "$out" >&3
