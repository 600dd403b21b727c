"""The diag engine and its kernel interface: NETLINK_SOCK_DIAG messages
(netlink.py), INET_DIAG filter bytecode (bytecode.py) and SOCK_DESTROY by
exact tuple and cookie (destroy.py). Importing any of them imports pyroute2."""
