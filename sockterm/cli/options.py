"""Option bundles shared by list, match and kill: written once, used by all.

Only click and the standard library here: --help and completion stay fast.
"""

from __future__ import annotations

import click

OUTPUT_FORMATS = ("table", "tsv", "json", "jsonl")


class Option(click.Option):
    """click's Option, its help kept as written. click's own passes the help
    through inspect.cleandoc as each option is made, and inspect is ~7 ms of
    imports (ast, dis, tokenize) that a run printing no help never needs
    (main.py defers it). Every help text here is one clean paragraph, which
    cleandoc returns unchanged (tests/unit/test_deferred.py checks each)."""

    def __init__(self, *args, help=None, **kwargs):
        if kwargs.get("deprecated"):        # click writes the label into the help
            super().__init__(*args, help=help, **kwargs)
            return
        super().__init__(*args, **kwargs)
        self.help = help


def option(*param_decls, **kwargs):
    """click.option, made an Option of ours."""
    return click.option(*param_decls, cls=Option, **kwargs)


def help_option():
    """-h/--help, made an Option of ours: given to each command by hand (the
    group's help_option_names is empty), as click would add it, last."""
    return click.help_option("-h", "--help", cls=Option)


def _complete_states(ctx, param, incomplete):
    from ..states import state_names
    return [n for n in state_names() if n.startswith(incomplete)]


def _complete_netns(ctx, param, incomplete):
    from ..host import netns
    try:
        found, _ = netns.discover()
    except OSError:
        return []
    from ..text import shown
    # as shown: a name with a newline would break the completion protocol
    names = [shown(ns.name) for ns in found] + [str(ns.ino) for ns in found]
    return [n for n in names if n.startswith(incomplete)]


def _complete_containers(ctx, param, incomplete):
    from ..host import containers
    try:
        running, _ = containers.inventory()
    except OSError:
        return []
    names = [c.name for c in running]
    if len(incomplete) >= 1 and all(ch in "0123456789abcdef" for ch in incomplete):
        names += [c.id[:12] for c in running if c.id.startswith(incomplete)]
    return sorted({n for n in names if n.startswith(incomplete)})


def _complete_pods(ctx, param, incomplete):
    from ..host import containers
    try:
        _, pods = containers.inventory()
    except OSError:
        return []
    labels = [p.label for p in pods] + [p.name for p in pods if p.name]
    return sorted({n for n in labels if n.startswith(incomplete)})


def _complete_cgroups(ctx, param, incomplete):
    import os
    from ..host import cgroups
    mount = cgroups.v2_mount()
    if not mount:
        return []
    head, _, tail = incomplete.rpartition("/")
    try:
        names = [e.name for e in os.scandir(os.path.join(mount, head.lstrip("/"))) if e.is_dir()]
    except OSError:
        return []
    prefix = head + "/" if head or incomplete.startswith("/") else ""
    return sorted(prefix + n for n in names if n.startswith(tail))


def _compose(*decorators):
    def apply(fn):
        for deco in reversed(decorators):
            fn = deco(fn)
        return fn
    return apply


filter_options = _compose(
    option("--dst", "dst", multiple=True, metavar="ADDR[/PREFIX][:PORT]",
           help="Peer address, prefix and/or port (IPv6 as [ADDR]:PORT). Repeatable."),
    option("--src", "src", multiple=True, metavar="ADDR[/PREFIX][:PORT]",
           help="Local address, prefix and/or port. Repeatable."),
    option("--dport", "dport", multiple=True, metavar="P|LO-HI",
           help="Peer port or port range. Repeatable."),
    option("--sport", "sport", multiple=True, metavar="P|LO-HI",
           help="Local port or port range. Repeatable."),
    option("--proto", "proto", multiple=True, type=click.Choice(["tcp", "udp"]),
           help="Protocol. Repeatable; default both."),
    option("-4", "ipv4", is_flag=True, help="IPv4 sockets only."),
    option("-6", "ipv6", is_flag=True, help="IPv6 sockets only."),
    option("--state", "state", multiple=True, metavar="NAME",
           shell_complete=_complete_states,
           help="Socket state or group as ss(8) names them (established, syn-sent, "
                "listening, unconnected, connected, all, ...). Repeatable. "
                "match/kill default: connected sockets except time-wait."),
    option("--netns", "netns", multiple=True, metavar="NAME|INODE|PATH",
           shell_complete=_complete_netns,
           help="Only this network namespace (ip netns name, inode or nsfs path). "
                "Repeatable; default every namespace."),
    option("--pid", "pid", multiple=True, metavar="PID",
           help="Only sockets held by this process. Repeatable."),
    option("--comm", "comm", multiple=True, metavar="NAME",
           help="Only sockets held by processes with this name (/proc/PID/comm). Repeatable."),
    option("--container", "container", multiple=True, metavar="NAME|ID",
           shell_complete=_complete_containers,
           help="Only sockets of this running container (docker, podman, containerd, "
                "CRI-O, LXC, nspawn): name, id, or an id prefix of 4+ characters. Repeatable."),
    option("--pod", "pod", multiple=True, metavar="[NAMESPACE/]NAME",
           shell_complete=_complete_pods,
           help="Only sockets of this Kubernetes pod on this node. Repeatable."),
    option("--cgroup", "cgroup", multiple=True, metavar="PATH",
           shell_complete=_complete_cgroups,
           help="Only sockets created in this cgroup v2 or below it (path under the "
                "cgroup2 mount, or a unit name such as nginx.service). Repeatable."),
    option("--uid", "uid", multiple=True, metavar="USER|UID",
           help="Only sockets owned by this user. Repeatable."),
)

output_options = _compose(
    option("-o", "--output", "output", type=click.Choice(OUTPUT_FORMATS),
           help="Output format; default: table on a terminal, tsv otherwise."),
    option("-H", "--no-header", "no_header", is_flag=True,
           help="Omit the header line of table and tsv output."),
    option("--no-processes", "no_processes", is_flag=True,
           help="Do not attribute sockets to processes (faster)."),
)


class Duration(click.ParamType):
    """30s, 5m, 1h, 500ms, or plain seconds."""

    name = "duration"
    UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}

    def convert(self, value, param, ctx):
        if isinstance(value, float):
            return value
        import re
        found = re.fullmatch(r"(\d{1,9}(?:\.\d{1,6})?)(ms|s|m|h)?", str(value).strip())
        seconds = float(found[1]) * self.UNITS[found[2] or "s"] if found else 0.0
        if not 0 < seconds <= 7 * 86400:
            self.fail(f"{value!r} is not a duration: expected e.g. 30s, 5m or 1h (at most 7 days)",
                      param, ctx)
        return seconds


watch_option = option(
    "--watch", "watch", type=Duration(), metavar="DURATION",
    help="After the kill of what matches now, keep watching for DURATION (30s, 5m, 1h): every new "
         "connection that matches, in any namespace, is destroyed as the kernel reports it "
         "(match: reported). Ends early on SIGINT, SIGTERM or SIGHUP.")


def _set_global(ctx, param, value):
    """The group's callback has run and set ctx.obj: a value given after the
    subcommand overrides it (`sockterm list -v` = `sockterm -v list`)."""
    if value and ctx.obj is not None:
        ctx.obj[param.name] = value


# the global options, also accepted after the subcommand
global_options = _compose(
    option("--backend", type=click.Choice(["auto", "bpf", "diag"]), default=None,
           expose_value=False, callback=_set_global, is_eager=True,
           help="Engine, as the global option (before the command)."),
    option("-v", "--verbose", is_flag=True, expose_value=False, callback=_set_global,
           is_eager=True, help="Explain decisions on stderr, as the global option."),
    option("--debug", is_flag=True, expose_value=False, callback=_set_global,
           is_eager=True, help="Show tracebacks on errors, as the global option."),
)


def filter_args(kwargs: dict) -> dict:
    """Pop the filter options out of a command's keyword arguments."""
    keys = ("dst", "src", "dport", "sport", "proto", "ipv4", "ipv6", "state", "netns", "pid", "comm",
            "container", "pod", "cgroup", "uid")
    return {key: kwargs.pop(key) for key in keys}

