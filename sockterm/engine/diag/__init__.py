"""The diag engine and its kernel interface: NETLINK_SOCK_DIAG messages
(declared in netlink.py, on the wire in wire.py), INET_DIAG filter bytecode
(bytecode.py) and SOCK_DESTROY by exact tuple and cookie (destroy.py). A run
imports wire.py, never pyroute2 (~80 ms a process); netlink.py's pyroute2
declarations are what the unit tests check wire.py against."""
