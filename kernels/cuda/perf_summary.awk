# The device round's one summary table, from the perf records of every check program
# (mamba/kernels/cuda/perf_record.h):  awk [-v rows=REGEX] [-v title=TEXT] -f kernels/cuda/perf_summary.awk LOG...
# rows: only the records of the files whose name matches REGEX become rows (every file still
# gives the device and the copy bandwidth); title: the table's heading.
#
#   perf-device|<name>|<SMs>|<max SM clock MHz>|<cc>     the device (first one seen)
#   perf|<kernel>|<shape>|<dtype>|<us>|<bytes>|<ops>|<unit>
#
# One row per (kernel, shape, dtype): the fastest of its records (n = how many there were).
# Floors from first principles: memory = bytes / the copy bandwidth (the fastest "memcpy d2d"
# record, read + write); operations = ops / the peak of the unit that does them = SMs x clock x
# the unit's rate per SM and clock (sm_90: dense bf16 tensor cores 4096 FLOP, TF32 2048, FP32
# FMA pipe 256 FLOP, MUFU 16 exponentials; sm_80: 2048, 1024, 128, 16). The floor is the larger
# of the two; % of floor = floor / time.
BEGIN { FS = "|"; nrow = 0; copy_gbs = 0 }
$1 == "perf-device" && dev == "" { dev = $2; sms = $3 + 0; mhz = $4 + 0; cc = $5 }
$1 == "perf" && NF >= 8 && $2 == "memcpy d2d" && $5 > 0 && ($6 / $5 / 1e3) > copy_gbs { copy_gbs = $6 / $5 / 1e3 }
$1 == "perf" && NF >= 8 && (rows == "" || FILENAME ~ rows) {
  key = $2 "|" $3 "|" $4
  us = $5 + 0
  if (!(key in best)) { order[++nrow] = key; best[key] = us; bytes[key] = $6 + 0; ops[key] = $7 + 0; unit[key] = $8; count[key] = 0 }
  else if (us < best[key]) { best[key] = us; bytes[key] = $6 + 0; ops[key] = $7 + 0; unit[key] = $8 }
  count[key]++
}
END {
  split(cc, v, ".")
  if (v[1] + 0 >= 9) { r["tc"] = 4096; r["tf32"] = 2048; r["fma"] = 256; r["exp"] = 16 }
  else { r["tc"] = 2048; r["tf32"] = 1024; r["fma"] = 128; r["exp"] = 16 }
  hz = mhz * 1e6
  printf "\n== %s: %d timed kernel / shape / dtype rows (the fastest of n records each)\n", title == "" ? "summary" : title, nrow
  printf "device %s, %d SMs at %d MHz (cc %s): peaks tensor bf16 %.0f TFLOP/s, TF32 %.0f TFLOP/s, FP32 FMA %.1f TFLOP/s, MUFU %.2f T exp/s; copy %.0f GB/s (measured, read + write)\n",
    dev, sms, mhz, cc, sms * hz * r["tc"] / 1e12, sms * hz * r["tf32"] / 1e12, sms * hz * r["fma"] / 1e12,
    sms * hz * r["exp"] / 1e12, copy_gbs
  printf "| kernel | shape | dtype | time us | GB/s | TFLOP/s or T exp/s | %% of floor | floor kind | n |\n"
  printf "|---|---|---|---:|---:|---:|---:|---|---:|\n"
  for (i = 1; i <= nrow; i++) {
    k = order[i]; split(k, f, "|")
    us = best[k]; b = bytes[k]; o = ops[k]; u = unit[k]
    gbs = us > 0 ? b / us / 1e3 : 0
    mem_us = copy_gbs > 0 ? b / copy_gbs / 1e3 : 0
    peak = (u in r) ? sms * hz * r[u] : 0
    op_us = (peak > 0 && o > 0) ? o / peak * 1e6 : 0
    rate = "-"
    if (o > 0 && us > 0) rate = sprintf(u == "exp" ? "%.2f T exp/s" : "%.1f TFLOP/s", o / us / 1e6)
    kind = "-"; fl = 0
    if (mem_us > 0) { kind = "mem"; fl = mem_us }
    if (op_us > fl) { kind = (u == "tc" ? "tensor" : u == "tf32" ? "tensor tf32" : u == "fma" ? "fp32 fma" : "mufu exp"); fl = op_us }
    pct = (fl > 0 && us > 0) ? sprintf("%.0f%%", 100 * fl / us) : "-"
    printf "| %s | %s | %s | %.1f | %.0f | %s | %s | %s | %d |\n", f[1], f[2], f[3], us, gbs, rate, pct, kind, count[k]
  }
  if (copy_gbs == 0) print "(no memcpy d2d record: memory floors not computed)"
}
