#!/usr/bin/python
# -*- coding: utf-8 -*-
# MIT License (see the sockterm repository)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: sockets_info
short_description: List TCP and UDP sockets in every network namespace
version_added: 0.1.0
description:
  - Reports the TCP and UDP sockets of every network namespace of the target, or those
    matching a filter, through the sockterm CLI. Changes nothing.
  - With no filter option it runs C(sockterm list -o json) (every socket, every state);
    with any filter option C(sockterm match -o json), which selects exactly what
    M(sockterm.sockterm.sockets) with the same options would kill (so without
    O(socket_state), connected sockets only).
author:
  - sockterm developers
extends_documentation_fragment:
  - sockterm.sockterm.filters
attributes:
  check_mode:
    description: Reads only; runs the same in check mode.
    support: full
  diff_mode:
    description: No diff is shown.
    support: none
seealso:
  - module: sockterm.sockterm.sockets
"""

EXAMPLES = r"""
- name: Every socket on the host
  sockterm.sockterm.sockets_info:
  become: true
  register: all_sockets

- name: Who is connected to the VIP, and from which namespaces
  sockterm.sockterm.sockets_info:
    dst: [10.0.0.5:80]
  register: vip

- ansible.builtin.debug:
    msg: "{{ vip.matched }} sockets in {{ vip.sockets | map(attribute='netns_name') | unique | list }}"

- name: One namespace's servers
  sockterm.sockterm.sockets_info:
    netns: [web-1]
    socket_state: [listening]
"""

RETURN = r"""
matched:
  description: Sockets listed or matched.
  returned: always
  type: int
  sample: 12
sockets:
  description:
    - The CLI's socket objects (README "JSON") - C(netns), C(netns_name), C(proto),
      C(family), C(state), C(src), C(sport), C(dst), C(dport), C(cookie), C(inode),
      C(uid), C(processes).
  returned: always
  type: list
  elements: dict
namespaces:
  description: The CLI's namespace objects - C(netns), C(netns_name), C(engine), C(matched),
    C(error).
  returned: always
  type: list
  elements: dict
summary:
  description: The CLI's C(summary) object (C(matched), C(namespaces) searched,
    C(namespaces_matched), C(namespace_errors)).
  returned: always
  type: dict
command:
  description: The command line run.
  returned: always
  type: list
  elements: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sockterm.sockterm.plugins.module_utils.sockterm_cli import (
    FILTER_ARGS, command, failure_message, find_executable, has_filter, read_document, results)


def main():
    module = AnsibleModule(argument_spec=dict(FILTER_ARGS), supports_check_mode=True)
    params = module.params
    executable = find_executable(params["executable"])
    if executable is None:
        module.fail_json(msg="sockterm not found (%s): install it on the target or set executable"
                             % (params["executable"] or "PATH and the sbin/bin directories"))
    subcommand = "match" if has_filter(params) else "list"
    argv = command(executable, subcommand, params)
    rc, stdout, stderr = module.run_command(argv, check_rc=False)
    doc = read_document(stdout)
    found = results(doc)
    result = dict(changed=False, matched=found["matched"], sockets=found["sockets"],
                  namespaces=found["namespaces"], summary=found["summary"], command=argv)
    # no `rc` in the result: Ansible takes a non-zero one for a failure, and 1 is
    # only "nothing matched"
    if rc not in (0, 1):
        module.fail_json(msg=failure_message(subcommand, rc, stderr, doc), rc=rc, stderr=stderr,
                         **result)
    if doc is None:
        module.fail_json(msg="sockterm %s printed no JSON document (exit %d)" % (subcommand, rc),
                         rc=rc, stderr=stderr, **result)
    module.exit_json(**result)


if __name__ == "__main__":
    main()
