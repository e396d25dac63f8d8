#!/usr/bin/env python3
"""Drops the PTX entries from the fat binaries of an executable, in place, for the device
snapshot (which must stay under 12 MB; nvcc stores the PTX zstd-compressed, so it does not
compress further, and the device runs the sm_90 machine code anyway).

  python3 tools/device/fatbin_drop_ptx.py BINARY [ARCH=90]

Each fat binary in the .nv_fatbin section (header: magic 0xBA55ED50, u16 version, u16 header
size, u64 size of the entries; entry: u16 kind (1 PTX, 2 ELF), u16 version, u32 header size,
u64 payload size, ...) is rewritten in place as its header, then its ELF entries moved up,
its size field set to theirs, and zeros up to the old end: the section keeps its size and
every fat binary its address, so nothing that points at them changes. A fat binary without
an ELF entry for sm_ARCH is left untouched (its PTX would be the only code for the GPU)."""
import struct
import subprocess
import sys

MAGIC = 0xBA55ED50


def section(path, name):
    out = subprocess.run(["readelf", "-W", "-S", path], check=True, capture_output=True, text=True).stdout
    for line in out.splitlines():
        f = line.replace("[ ", "[").split()
        if len(f) > 5 and f[1] == name:
            return int(f[4], 16), int(f[5], 16)  # file offset, size
    raise SystemExit(f"{path}: no {name} section")


def main():
    path = sys.argv[1]
    arch = int(sys.argv[2]) if len(sys.argv) > 2 else 90
    off, size = section(path, ".nv_fatbin")
    with open(path, "rb") as fh:
        data = bytearray(fh.read())
    sec = memoryview(data)[off:off + size]
    p, dropped, kept, n = 0, 0, 0, 0
    while p + 16 <= size:
        magic, ver, hs, fs = struct.unpack_from("<IHHQ", sec, p)
        if magic != MAGIC:
            p += 8  # fat binaries are 8-byte aligned; padding between them
            continue
        n += 1
        entries, q, end = [], p + hs, p + hs + fs
        while q + 16 <= end:
            kind, ever, ehs, esz = struct.unpack_from("<HHIQ", sec, q)
            if ehs == 0:
                break
            # the entry's target architecture: u32 at offset 28 of the entry header
            sm = struct.unpack_from("<I", sec, q + 28)[0]
            entries.append((kind, sm, bytes(sec[q:q + ehs + esz])))
            q += ehs + esz
        if q != end:
            raise SystemExit(f"fat binary {n} at {p}: entries do not end at its size ({q} vs {end})")
        elfs = [e for e in entries if e[0] == 2]
        if any(e[1] == arch for e in elfs) and len(elfs) < len(entries):
            body = b"".join(e[2] for e in elfs)
            struct.pack_into("<IHHQ", sec, p, magic, ver, hs, len(body))
            sec[p + hs:p + hs + len(body)] = body
            sec[p + hs + len(body):end] = bytes(end - p - hs - len(body))
            dropped += sum(len(e[2]) for e in entries if e[0] != 2)
        kept += sum(len(e[2]) for e in elfs)
        p = end
    with open(path, "wb") as fh:
        fh.write(data)
    print(f"{path}: {n} fat binaries, dropped {dropped} bytes of PTX, kept {kept} bytes of sm_{arch} ELF")


if __name__ == "__main__":
    main()
