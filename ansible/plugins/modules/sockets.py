#!/usr/bin/python
# -*- coding: utf-8 -*-
# MIT License (see the sockterm repository)

from __future__ import absolute_import, division, print_function

__metaclass__ = type

DOCUMENTATION = r"""
module: sockets
short_description: Ensure no TCP or UDP socket matching a filter exists, in any network namespace
version_added: 0.1.0
description:
  - Destroys the TCP and UDP sockets that match a filter, in every network namespace of
    the target, by running C(sockterm kill --yes -o json). The local application gets
    C(ECONNABORTED), a TCP peer gets a reset.
  - Check mode is a dry run (C(sockterm match -o json)) - it reports what would be
    killed and kills nothing.
  - Like the CLI it needs an option naming what to kill - one of O(dst), O(src),
    O(dport), O(sport), O(netns), O(pid), O(comm), O(container), O(pod), O(cgroup),
    O(uid).
  - Nothing matching is success with C(changed=false), so a second run is a no-op.
    A kill that fails for any socket fails the task, returning what was killed.
author:
  - sockterm developers
options:
  state:
    description:
      - C(absent) - no socket matches the filter after the run.
    type: str
    choices: [absent]
    default: absent
  max:
    description:
      - Refuse, killing nothing, when more than this many sockets match (the CLI's C(--max)).
        The task then fails, naming the count.
      - In check mode the task fails the same way, predicting the refusal.
    type: int
  rate:
    description:
      - Kill at most this many sockets a second (the CLI's C(kill --rate)); needs a
        sockterm that has the option.
    type: float
extends_documentation_fragment:
  - sockterm.sockterm.filters
attributes:
  check_mode:
    description: Runs C(sockterm match) instead - reports what would be killed, kills nothing.
    support: full
  diff_mode:
    description: No diff is shown.
    support: none
seealso:
  - module: sockterm.sockterm.sockets_info
"""

EXAMPLES = r"""
- name: Abort every connection to a dead backend behind a VIP, in every namespace
  sockterm.sockterm.sockets:
    dst: [10.0.0.5:80]
    max: 50000
  become: true

- name: Both address families of the VIP, with the bpf engine
  sockterm.sockterm.sockets:
    dst: ["10.0.0.5:443", "[fd00::5]:443"]
    backend: bpf

- name: Everything a process holds to a database, at most 100 sockets a second
  sockterm.sockterm.sockets:
    pid: [4242]
    dport: [5432]
    rate: 100

- name: A CI runner's namespace, servers too, on purpose
  sockterm.sockterm.sockets:
    netns: [ci-runner-7]
    socket_state: [all]

- name: What would die (dry run)
  sockterm.sockterm.sockets:
    dst: [10.0.0.5:80]
  check_mode: true
  register: preview
"""

RETURN = r"""
matched:
  description: Sockets that matched the filter.
  returned: always
  type: int
  sample: 12
killed:
  description: Sockets destroyed (0 in check mode).
  returned: always
  type: int
  sample: 12
failed:
  description:
    - Matching sockets the kernel did not destroy. Ansible's own C(failed) status
      takes this key when the task fails; the count is then in C(summary.failed).
  returned: always
  type: int
  sample: 0
sockets:
  description:
    - The CLI's socket objects (README "JSON") - C(netns), C(netns_name), C(proto),
      C(family), C(state), C(src), C(sport), C(dst), C(dport), C(cookie), C(inode),
      C(uid), C(processes), and for a kill C(result) and C(error).
    - Empty when the CLI printed no JSON (a refusal).
  returned: always
  type: list
  elements: dict
  sample:
    - netns: 4026532291
      netns_name: web-1
      proto: tcp
      family: 4
      state: established
      src: 10.1.0.2
      sport: 50412
      dst: 10.0.0.5
      dport: 80
      cookie: 8231
      inode: 93121
      uid: 0
      processes: [{pid: 4242, comm: nginx}]
      result: killed
      error: null
namespaces:
  description: The CLI's namespace objects - C(netns), C(netns_name), C(engine), C(matched),
    C(killed), C(failed), C(error).
  returned: always
  type: list
  elements: dict
summary:
  description: The CLI's C(summary) object (C(matched), C(namespaces) searched,
    C(namespaces_matched), C(namespace_errors), and for a kill C(killed), C(failed));
    empty when it printed no JSON.
  returned: always
  type: dict
command:
  description: The command line run.
  returned: always
  type: list
  elements: str
  sample: [/usr/local/bin/sockterm, kill, --output=json, --yes, --max=50000, --dst=10.0.0.5:80]
rc:
  description:
    - The CLI's exit status (0 killed, 1 nothing matched, 2 usage, 3 failure).
      Exit 1 is success here (RV(failed) is 0, which Ansible reads as such).
  returned: always
  type: int
stderr:
  description: What the CLI wrote on stderr (its summary lines, warnings, error).
  returned: always
  type: str
"""

from ansible.module_utils.basic import AnsibleModule
from ansible_collections.sockterm.sockterm.plugins.module_utils.sockterm_cli import (
    FILTER_ARGS, TARGETING, command, failure_message, find_executable, number_text,
    read_document, results, targeted)


def main():
    module = AnsibleModule(
        argument_spec=dict(state=dict(type="str", choices=["absent"], default="absent"),
                           max=dict(type="int"), rate=dict(type="float"), **FILTER_ARGS),
        supports_check_mode=True,
    )
    params = module.params
    if not targeted(params):
        module.fail_json(msg="sockets needs an option naming what to kill: one of "
                             + ", ".join(TARGETING))
    if params["max"] is not None and params["max"] < 0:
        module.fail_json(msg="max must be 0 or more, not %d" % params["max"])
    if params["rate"] is not None and params["rate"] <= 0:
        module.fail_json(msg="rate must be more than 0")
    executable = find_executable(params["executable"])
    if executable is None:
        module.fail_json(msg="sockterm not found (%s): install it on the target or set executable"
                             % (params["executable"] or "PATH and the sbin/bin directories"))

    if module.check_mode:
        subcommand, options = "match", []
    else:
        subcommand, options = "kill", ["--yes"]
        if params["max"] is not None:
            options.append("--max=%d" % params["max"])
        if params["rate"] is not None:
            options.append("--rate=%s" % number_text(params["rate"]))
    argv = command(executable, subcommand, params, options)
    rc, stdout, stderr = module.run_command(argv, check_rc=False)
    doc = read_document(stdout)
    result = dict(results(doc), changed=False, command=argv, rc=rc, stderr=stderr)

    if rc not in (0, 1) or result["failed"]:
        module.fail_json(msg=failure_message(subcommand, rc, stderr, doc), **result)
    if doc is None:
        module.fail_json(msg="sockterm %s printed no JSON document (exit %d)" % (subcommand, rc),
                         **result)
    if module.check_mode:
        result["changed"] = result["matched"] > 0
        if params["max"] is not None and result["matched"] > params["max"]:
            module.fail_json(msg="%d sockets match, more than max %d: the kill would refuse, "
                                 "killing nothing" % (result["matched"], params["max"]), **result)
    else:
        result["changed"] = result["killed"] > 0
    module.exit_json(**result)


if __name__ == "__main__":
    main()
