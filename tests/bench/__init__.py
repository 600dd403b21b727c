"""On-demand benchmarks (not collected by pytest): `sudo python3 -m tests.bench [--quick]`."""
