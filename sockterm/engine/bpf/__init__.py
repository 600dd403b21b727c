"""The bpf engine and its kernel interface: libbpf's C API (libbpf.py), the
record layout shared with bpf/sockterm.h (record.py), the filter as the
programs read it (config.py) and the shipped object's identity (objinfo.py)."""
