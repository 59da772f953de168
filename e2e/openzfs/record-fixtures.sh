#!/usr/bin/env bash
# Records pkg/zfs's OpenZFS fixtures from the real OpenZFS module in the
# guest: the same datasets and failing commands the parser tests read, so
# the fixtures are what OpenZFS prints, not a transcription.
set -euo pipefail
root=$(cd "$(dirname "$0")/../.." && pwd)
image=$("$root/e2e/openzfs/build-image.sh")
work=$root/.cache/openzfs/record
rm -rf "$work"
mkdir -p "$work/payload"
cat >"$work/payload/run.sh" <<'RUN'
#!/bin/bash
# Inside the guest: a pool named like the fixtures', then each output
# between markers.
set -u
truncate -s 1G /var/tmp/vdev
zpool create -o cachefile=none -m /tank tank /var/tmp/vdev
zfs create tank/dots
zfs create -o refquota=100M -o io.dotmesh:managed=true -o io.dotmesh:name=foo tank/dots/abc
dd if=/dev/urandom of=/tank/dots/abc/data bs=1M count=4 status=none
zfs snapshot tank/dots/abc@c1
zfs clone -o refquota=200M -o io.dotmesh:managed=true -o io.dotmesh:name=cl tank/dots/abc@c1 tank/dots/cl
rec() { local name=$1; shift; echo "=== FILE $name"; "$@" 2>&1; echo "=== END"; }
rec get.txt zfs get -Hp -o name,property,value,source -r type,origin,referenced,refquota,io.dotmesh:managed,io.dotmesh:name tank/dots
rec zpool-list.txt zpool list -Hp -o name,size,free,health tank
rec err-notfound.txt zfs destroy tank/dots/nope
rec err-exists.txt zfs create tank/dots/abc
rec err-dependents.txt zfs destroy tank/dots/abc@c1
rec err-import.txt zpool import -d /var/tmp nope
rec err-refquota-small.txt zfs set refquota=1M tank/dots/abc
zfs create tank/busy
(cd /tank/busy && exec sleep 60) &
holder=$!
sleep 1
rec err-busy.txt zfs destroy tank/busy
kill $holder
zfs create -o refquota=1M tank/full
dd if=/dev/zero of=/tank/full/f bs=1M count=2 status=none 2>/dev/null; sync
rec err-outofspace.txt zfs create -o quota=1M -o refreservation=2G tank/toobig
# Feature detection: the pool's feature flags, the kernel's filesystems.
rec zpool-get-all.txt zpool get -H -o property,value all tank
rec proc-filesystems.txt cat /proc/filesystems
# Legacy mounts.
zfs create -o mountpoint=legacy tank/dots/src
mkdir -p /mnt/src
mount -t zfs tank/dots/src /mnt/src
rec err-already-mounted.txt mount -t zfs tank/dots/src /mnt/src
# Resumable receives: streams broken off part-way with zfs recv -s.
dd if=/dev/urandom of=/mnt/src/a bs=1M count=16 status=none
zfs snapshot tank/dots/src@c1
zfs send -p -R tank/dots/src@c1 2>/dev/null | head -c 4000000 | zfs recv -s -u -F tank/dots/dst >/dev/null 2>&1
rec get-resume-token.txt zfs get -Hp -o name,property,value,source receive_resume_token tank/dots/dst
tok=$(zfs get -H -o value receive_resume_token tank/dots/dst)
rec send-resume-full.txt zfs send -nv -t "$tok"
rec err-resume-exists.txt bash -c 'zfs send -p -R tank/dots/src@c1 2>/dev/null | zfs recv -s -u -F tank/dots/dst'
zfs send -t "$tok" | zfs recv -s -u -F tank/dots/dst
dd if=/dev/urandom of=/mnt/src/b bs=1M count=8 status=none
zfs snapshot tank/dots/src@c2
zfs send -p -I tank/dots/src@c1 tank/dots/src@c2 2>/dev/null | head -c 2000000 | zfs recv -s -u -F tank/dots/dst >/dev/null 2>&1
tok=$(zfs get -H -o value receive_resume_token tank/dots/dst)
rec send-resume-incremental.txt zfs send -nv -t "$tok"
umount /mnt/src
zfs destroy tank/dots/src@c2
rec err-send-t-stale.txt zfs send -nv -t "$tok"
rec err-send-t-corrupt.txt zfs send -nv -t 1-abc-12-deadbeef
zfs recv -A tank/dots/dst
rec err-recv-A-nostate.txt zfs recv -A tank/dots/dst
# A pool with every feature disabled, as an old pool would be.
truncate -s 256M /var/tmp/vdev2
zpool create -d -o cachefile=none -m /tank2 tank2 /var/tmp/vdev2
rec zpool-get-all-nofeatures.txt zpool get -H -o property,value all tank2
rec err-upgrade-needed.txt zfs create -o compression=zstd tank2/z
zpool destroy tank2
rm -f /var/tmp/vdev2
zpool destroy tank
rm -f /var/tmp/vdev
# ZFS itself unavailable: what every command says without the module.
modprobe -r zfs
rec err-no-module.txt zfs list
RUN
chmod +x "$work/payload/run.sh"
mkfs.ext4 -q -F -d "$work/payload" "$work/payload.img" 64M >&2
# shellcheck source=e2e/openzfs/lib.sh
. "$root/e2e/openzfs/lib.sh"
boot_guest "$image" "$work/payload.img" "$work" 900
out=$root/pkg/zfs/testdata/openzfs-2.1
awk -v dir="$out" '{sub(/\r$/, "")} /^=== FILE /{f=dir"/"$3; printf "" > f; next} /^=== END/{close(f); f=""; next} f!=""{print >> f}' "$work/serial.log"
echo "recorded into $out:"
ls "$out"
