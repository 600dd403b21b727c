"""Exit codes, as pkill(1) has them. The one place they are named."""

import enum


class ExitCode(enum.IntEnum):
    OK = 0            # something matched (list/match) or was killed (kill)
    NO_MATCH = 1      # the filter matched nothing
    USAGE = 2         # bad command line or filter; nothing was done
    FAILURE = 3       # operational failure: a kill failed, no privileges, kernel cannot
