# Markdown summary of a bench/run.sh TSV (header row names the columns).
# Per scenario and proxy: medians over repeats, (min–max) for req/s and CPU/req,
# and same-run ratios to nginx: for each repeat, proxy value / nginx value in
# that repeat of that scenario; the median (min–max) of those ratios is shown.
# Then the same ratios between two scenarios of one proxy (PAIRS below: what a feature costs
# over the plain path it is measured against), again per repeat.
BEGIN { FS = "\t" }
NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
{
  sc = $col["scenario"]; px = $col["proxy"]; key = sc SUBSEP px
  if (!(key in seen)) { seen[key] = 1 }
  if (!(sc in seensc)) { seensc[sc] = 1; scs[++nsc] = sc }
  if (!(px in seenpx)) { seenpx[px] = 1; pxs[++npx] = px }
  if (("rss0_kib" in col) && $col["status"] == "ok" && $col["rss0_kib"] != "-") { # idle-connection runs
    if (!((sc, px) in iseen)) { iseen[sc, px] = 1; ikeys[++nik] = sc SUBSEP px }
    m = ++icnt[sc, px]
    iconns[sc, px, m] = $col["requests"]; irss0[sc, px, m] = $col["rss0_kib"]
    irss1[sc, px, m] = $col["rss_kib"]; ifail[sc, px] += $col["sock_errors"]
    delete seen[key]
    next
  }
  if ($col["note"] ~ /mean\/max/) meanmax[key] = 1
  if ($col["status"] != "ok") {
    if ($col["status"] == "skipped") skipped[key] = $col["note"]
    else { failed[key]++; failnote[key] = $col["note"] }
    next
  }
  n = ++cnt[key]
  rep[key, n] = $col["rep"]
  rps[key, n] = $col["rps"]; p50[key, n] = $col["p50_ms"]; p99[key, n] = $col["p99_ms"]
  cpu[key, n] = $col["cpu_us_per_req"]; pct[key, n] = $col["cpu_pct"]; rss[key, n] = $col["rss_kib"]
  usr[key, n] = ("cpu_user_us_per_req" in col) ? $col["cpu_user_us_per_req"] : "-"
  sys[key, n] = ("cpu_sys_us_per_req" in col) ? $col["cpu_sys_us_per_req"] : "-"
  bycpu[sc, px, $col["rep"]] = $col["cpu_us_per_req"]
  runq[key, n] = $col["proxy_runq_pct"]
  errs[key] += $col["sock_errors"] + $col["non2xx"]
  if (px == "nginx") { nrps[sc, $col["rep"]] = $col["rps"]; ncpu[sc, $col["rep"]] = $col["cpu_us_per_req"] }
}

# stats(v, n): sets MED, MIN, MAX of v[1..n], ignoring "-" entries; NS = count used
function stats(v, n,    i, j, t, b, m) {
  m = 0
  for (i = 1; i <= n; i++) if (v[i] != "-" && v[i] != "") b[++m] = v[i] + 0
  for (i = 2; i <= m; i++) { t = b[i]; for (j = i - 1; j >= 1 && b[j] > t; j--) b[j + 1] = b[j]; b[j + 1] = t }
  NS = m
  if (m == 0) { MED = MIN = MAX = ""; return }
  MIN = b[1]; MAX = b[m]
  MED = (m % 2) ? b[(m + 1) / 2] : (b[m / 2] + b[m / 2 + 1]) / 2
}
function pick(arr, key, n,    i, v) { split("", V); for (i = 1; i <= n; i++) V[i] = arr[key, i] }
function fmt(f, x) { return (x == "") ? "—" : sprintf(f, x) }
function range(f) {
  if (MED == "") return "—"
  if (NS == 1) return sprintf(f, MED)
  return sprintf(f " (" f "–" f ")", MED, MIN, MAX)
}
function kilo(x) { return x / 1000 }

END {
  print "| scenario | proxy | req/s median (min–max) | p50 ms | p99 ms | CPU-µs/req median (min–max) | user + system µs | proxy CPU % (runq %) | RSS MiB | req/s ÷ nginx | CPU/req ÷ nginx | runs |"
  print "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
  for (a = 1; a <= nsc; a++) for (b = 1; b <= npx; b++) {
    sc = scs[a]; px = pxs[b]; key = sc SUBSEP px
    if (!(key in seen)) continue
    n = cnt[key] + 0
    if (n == 0) {
      note = (key in skipped) ? "not run: " skipped[key] : sprintf("all %d runs failed: %s", failed[key], failnote[key])
      printf "| %s | %s | %s | | | | | | | | | 0 |\n", sc, px, note
      continue
    }
    pick(rps, key, n); for (i = 1; i <= n; i++) V[i] = V[i] / 1000; stats(V, n); c_rps = range("%.1fk")
    pick(p50, key, n); stats(V, n); c_p50 = fmt("%.2f", MED)
    pick(p99, key, n); stats(V, n); c_p99 = fmt("%.2f", MED)
    if (key in meanmax) { c_p50 = c_p50 " (mean)"; c_p99 = c_p99 " (max)" }
    pick(cpu, key, n); stats(V, n); c_cpu = range("%.1f")
    pick(usr, key, n); stats(V, n); c_us = fmt("%.1f", MED)
    pick(sys, key, n); stats(V, n); c_us = (MED == "") ? "—" : c_us " + " fmt("%.1f", MED)
    pick(pct, key, n); stats(V, n); c_pct = fmt("%.0f", MED)
    pick(runq, key, n); stats(V, n); if (MED != "") c_pct = c_pct sprintf(" (%.0f)", MED)
    pick(rss, key, n); stats(V, n); c_rss = (MED == "") ? "—" : sprintf("%.1f", MED / 1024)
    # same-run ratios to nginx
    split("", R); split("", C); nr = nc = 0
    for (i = 1; i <= n; i++) {
      r = rep[key, i]
      if ((sc, r) in nrps && nrps[sc, r] > 0) R[++nr] = rps[key, i] / nrps[sc, r]
      if ((sc, r) in ncpu && ncpu[sc, r] > 0 && cpu[key, i] != "-") C[++nc] = cpu[key, i] / ncpu[sc, r]
    }
    if (px == "nginx") { c_rr = c_cr = "1 (ref)" }
    else {
      stats(R, nr); c_rr = range("%.2f")
      stats(C, nc); c_cr = range("%.2f")
    }
    runs = n ""; if (failed[key]) runs = runs " (+" failed[key] " failed)"
    if (errs[key]) runs = runs ", " errs[key] " errors"
    printf "| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", sc, px, c_rps, c_p50, c_p99, c_cpu, c_us, c_pct, c_rss, c_rr, c_cr, runs
  }
  # Same-proxy pairs: "feature scenario / baseline scenario", per repeat.
  npairs = split("auth-100b/hdr-100b policy-100b/hdr-100b h1-obs-on/h1-obs-off", PAIRS, " ")
  header = 0
  for (a = 1; a <= npairs; a++) {
    split(PAIRS[a], pr, "/")
    for (b = 1; b <= npx; b++) {
      px = pxs[b]
      if (px == "nginx" || px == "haproxy" || px == "direct") continue
      split("", C); nc = 0
      for (r = 1; r <= 1000; r++) {
        if (!((pr[1], px, r) in bycpu) || !((pr[2], px, r) in bycpu)) continue
        if (bycpu[pr[2], px, r] > 0) C[++nc] = bycpu[pr[1], px, r] / bycpu[pr[2], px, r]
      }
      if (nc == 0) continue
      if (!header) {
        print ""
        print "Same proxy, two scenarios, same repeat (CPU-µs/req of the first ÷ the second; median (min–max) over repeats):"
        print ""
        print "| proxy | scenario ÷ baseline | CPU/req ratio | repeats |"
        print "| --- | --- | --- | --- |"
        header = 1
      }
      stats(C, nc)
      printf "| %s | %s ÷ %s | %s | %d |\n", px, pr[1], pr[2], range("%.3f"), nc
    }
  }
  if (nik) {
    print ""
    print "Idle keep-alive connections (medians over repeats; each connection served one request, then idle):"
    print ""
    print "| scenario | proxy | connections held | RSS before MiB | RSS with them MiB | extra MiB | KiB per connection | runs |"
    print "| --- | --- | --- | --- | --- | --- | --- | --- |"
    for (a = 1; a <= nik; a++) {
      k = ikeys[a]; split(k, kk, SUBSEP); m = icnt[k]
      split("", V); for (i = 1; i <= m; i++) V[i] = iconns[k, i]; stats(V, m); c_n = sprintf("%d", MED)
      split("", V); for (i = 1; i <= m; i++) V[i] = irss0[k, i] / 1024; stats(V, m); c_r0 = sprintf("%.1f", MED)
      split("", V); for (i = 1; i <= m; i++) V[i] = irss1[k, i] / 1024; stats(V, m); c_r1 = sprintf("%.1f", MED)
      split("", V); for (i = 1; i <= m; i++) V[i] = (irss1[k, i] - irss0[k, i]) / 1024; stats(V, m); c_x = range("%.1f")
      split("", V); for (i = 1; i <= m; i++) V[i] = iconns[k, i] ? (irss1[k, i] - irss0[k, i]) / iconns[k, i] : 0
      stats(V, m); c_pc = range("%.2f")
      runs = m ""; if (ifail[k]) runs = runs ", " ifail[k] " connections failed"
      printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", kk[1], kk[2], c_n, c_r0, c_r1, c_x, c_pc, runs
    }
  }
}
