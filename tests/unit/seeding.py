"""SOCKTERM_SEED for the hypothesis tests, as for the privileged tier's random ones."""

import os

from hypothesis import seed

SEED = os.environ.get("SOCKTERM_SEED")


def seeded(test):
    """SOCKTERM_SEED=N makes hypothesis draw the same examples again (unset: random)."""
    return seed(int(SEED))(test) if SEED else test
