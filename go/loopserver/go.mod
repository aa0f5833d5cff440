// loopserver: the loopback HTTP(S) target of bench/bench_loadtest.py (standard library only).
module audit-tune/loopserver

go 1.26.0
