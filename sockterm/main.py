"""The sockterm process: signal handling first, then the command line.

From the first line sockterm runs, SIGINT, SIGTERM and SIGHUP only set a
flag (see signals.py), so a signal during start-up is never lost inside a C
callback; before that line the signal's default action ends the process,
which has not touched anything yet.
"""

import gc

# no cyclic collection, from the first import on: the imports alone would
# trigger a few full passes, and the run makes only acyclic objects
gc.disable()

import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
import types  # noqa: E402

from . import signals  # noqa: E402


class _Deferred(types.ModuleType):
    """A module whose code runs at the first use of a name it defines:
    `import` of it reads only attributes set here (__spec__, __name__), so it
    does not run it; the first other attribute asked for does, once (other
    threads wait for it), and the module is a plain one from then on. What
    importlib.util.LazyLoader does, but that on 3.11 any attribute, the
    `import` statement's look at __spec__ included, runs the code."""

    def __getattr__(self, name: str):
        with _DEFERRING:
            if type(self) is _Deferred and "__deferred_running__" not in self.__dict__:
                self.__deferred_running__ = True
                try:
                    self.__spec__.loader.exec_module(self)
                except BaseException:
                    sys.modules.pop(self.__name__, None)      # as a failed import leaves it
                    raise
                finally:
                    del self.__deferred_running__
                self.__class__ = types.ModuleType
        try:
            return self.__dict__[name]
        except KeyError:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}") from None


_DEFERRING = threading.RLock()


def defer(name: str) -> None:
    """Let the module `name` run only when first used. For inspect, which
    click imports for help text alone (cleandoc; our options keep their help
    as written: cli/options.py's Option): ast, dis, tokenize and its own
    enums, ~7 ms of every run that prints no help. A module imported already
    stays as it is."""
    if name in sys.modules:
        return
    import importlib.util
    spec = importlib.util.find_spec(name)
    if spec is None or spec.loader is None:
        return
    module = importlib.util.module_from_spec(spec)
    module.__class__ = _Deferred
    sys.modules[name] = module


def run() -> None:
    signals.install()
    defer("inspect")
    from .cli import main
    try:
        main()
    except SystemExit as exc:
        leave(exc.code)


def leave(code) -> None:
    """Exit without the interpreter's teardown: freeing every module and
    object one by one costs a process 10-20 ms for nothing. The run is over
    (its output written and flushed, the audit sent; the only threads left
    are idle daemons); what stdio still buffers is flushed here."""
    if code is None:
        code = 0
    elif not isinstance(code, int):
        print(code, file=sys.stderr)
        code = 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError) as exc:
            if stream is sys.stdout and getattr(exc, "errno", None) not in (None, 32):   # EPIPE
                from .exitcodes import ExitCode
                os.write(2, f"sockterm: error: cannot write output: {exc.strerror}\n".encode())
                code = code or int(ExitCode.FAILURE)
    os._exit(code)
