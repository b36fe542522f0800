#!/usr/bin/awk -f
# Passes benchmark output through and, at the end, prints the median of every custom metric per
# benchmark over the -count runs ("BenchmarkX  1  123 ns/op  4567 orders/s ..." lines).
{ print }
/^Benchmark/ {
	name = $1; sub(/-[0-9]+$/, "", name)
	for (i = 3; i < NF; i += 2) {
		key = name "\t" $(i+1)
		n[key]++; v[key, n[key]] = $i
		if (!(key in seen)) { seen[key] = 1; order[++k] = key }
	}
}
END {
	if (k == 0) exit
	print "\nmedians:"
	for (j = 1; j <= k; j++) {
		key = order[j]; m = n[key]
		for (a = 1; a <= m; a++) x[a] = v[key, a]
		for (a = 1; a <= m; a++) for (b = a + 1; b <= m; b++) if (x[b] < x[a]) { t = x[a]; x[a] = x[b]; x[b] = t }
		med = (m % 2) ? x[(m + 1) / 2] : (x[m / 2] + x[m / 2 + 1]) / 2
		split(key, p, "\t")
		printf "  %-60s %14.3f %s  (n=%d)\n", p[1], med, p[2], m
	}
}
