#!/usr/bin/env bash
# boot_guest IMAGE_DIR PAYLOAD_IMG WORK LIMIT: boots the cached OpenZFS guest
# with a payload disk (whose run.sh the guest runs), no network, and the
# image kept pristine (-snapshot). The guest's report lands in WORK/serial.log.
boot_guest() {
	local image=$1 payload=$2 work=$3 limit=$4
	local serial=$work/serial.log console=$work/console.log
	rm -f "$serial" "$console"
	qemu-system-x86_64 -accel tcg,thread=multi,tb-size=256 -cpu max -m 2048 -smp 2 -snapshot \
		-kernel "$image/vmlinuz" -initrd "$image/initrd.img" \
		-append "root=/dev/vda rw console=ttyS0 dotmesh-tests=1" \
		-drive file="$image/disk.img",if=virtio,format=raw \
		-drive file="$payload",if=virtio,format=raw \
		-nic none -display none -monitor none -no-reboot \
		-serial file:"$console" -serial file:"$serial" &
	local qpid=$! start=$SECONDS
	while kill -0 $qpid 2>/dev/null; do
		if ((SECONDS - start > limit)); then
			echo "openzfs guest: still running after ${limit}s; killing it" >&2
			kill $qpid
			break
		fi
		sleep 2
	done
	wait $qpid || true
	echo "openzfs guest: $((SECONDS - start))s; serial log $serial" >&2
	grep -q '^GUEST-START' "$serial" || { echo "openzfs guest: never started its payload (console: $console)" >&2; return 1; }
}
