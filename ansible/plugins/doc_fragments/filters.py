# -*- coding: utf-8 -*-
# MIT License (see the sockterm repository)

from __future__ import absolute_import, division, print_function

__metaclass__ = type


class ModuleDocFragment(object):
    # The sockterm CLI's filter options (README "Filters"): options AND together,
    # the items of one list OR together.
    DOCUMENTATION = r"""
options:
  dst:
    description:
      - Peer address, prefix, port or port range, C(ADDR[/PREFIX][:PORT]); IPv6 as C([ADDR]:PORT).
      - Each item is one C(--dst) of the CLI. An IPv4 target also matches IPv6 sockets
        talking to the v4-mapped address.
    type: list
    elements: str
  src:
    description:
      - Local address, prefix and/or port (C(--src)).
    type: list
    elements: str
  dport:
    description:
      - Peer port or port range C(LO-HI) (C(--dport)).
    type: list
    elements: str
  sport:
    description:
      - Local port or port range C(LO-HI) (C(--sport)).
    type: list
    elements: str
  proto:
    description:
      - Protocol (C(--proto)); default both.
    type: str
    choices: [tcp, udp]
  family:
    description:
      - Address family, C(4) or C(6) (C(-4), C(-6)); default both.
    type: int
    choices: [4, 6]
  socket_state:
    description:
      - Socket states or groups as ss(8) names them (C(--state)), for example
        C(established), C(listening), C(unconnected), C(connected), C(all).
      - Default for a kill or a filtered query, as the CLI's match and kill, connected
        sockets except time-wait; listeners and unconnected UDP sockets are servers and
        are selected only when named.
    type: list
    elements: str
  netns:
    description:
      - Network namespaces, by ip netns name, the name sockterm shows, inode or nsfs
        path (C(--netns)); default every namespace.
    type: list
    elements: str
  pid:
    description:
      - Only sockets held by these processes (C(--pid)).
    type: list
    elements: int
  comm:
    description:
      - Only sockets held by processes with these names, as in C(/proc/PID/comm) (C(--comm)).
    type: list
    elements: str
  container:
    description:
      - Only sockets of these running containers, by name, id or id prefix of 4+
        characters (C(--container)).
    type: list
    elements: str
  pod:
    description:
      - Only sockets of these Kubernetes pods on the node, C(NAMESPACE/NAME) or C(NAME) (C(--pod)).
    type: list
    elements: str
  cgroup:
    description:
      - Only sockets created in these cgroups (v2) or below them, whoever holds them now
        (C(--cgroup)); a path under the cgroup2 mount or a unit name such as C(nginx.service).
    type: list
    elements: str
  uid:
    description:
      - Only sockets owned by these users, names or uids (C(--uid)).
    type: list
    elements: str
  backend:
    description:
      - The engine (the CLI's global C(--backend)) - C(bpf) (socket iterators and the
        bpf_sock_destroy kfunc), C(diag) (netlink SOCK_DESTROY, as C(ss -K)), or C(auto)
        (bpf where the kernel can).
      - When not given, the CLI's default (C(auto), or C(SOCKTERM_BACKEND) in the
        module's environment).
    type: str
    choices: [auto, bpf, diag]
  executable:
    description:
      - The sockterm command to run, a path or a name.
      - Default C(sockterm) found on C(PATH), then in C(/usr/local/sbin), C(/usr/sbin),
        C(/sbin), C(/usr/local/bin), C(/usr/bin).
    type: path
notes:
  - Runs the sockterm CLI on the target with C(-o json) and returns its JSON; needs
    sockterm installed there, and root (C(become)) for most hosts.
  - Process, namespace and container names are whatever their owners chose; they are
    returned exactly as the CLI reports them.
requirements:
  - sockterm on the target (C(pip install sockterm)); Linux.
"""
