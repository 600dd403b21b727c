"""What faces the host: its network namespaces, its processes, and what its
kernel and this process's capabilities allow."""
