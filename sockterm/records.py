"""Mutable records: a dataclass's equality, repr and copy, without its cost.

A @dataclass compiles its __init__, __repr__ and __eq__ from source when its
module is imported: ~1 ms a class at every sockterm start, and `dataclasses`
itself ~1.3 ms. The mutable classes every short run makes (model.Namespace,
model.NamespaceReport, host.probe.HostProbe) write their __init__ by hand
and take the rest from here; the immutable ones are NamedTuples.
"""

from __future__ import annotations


class Record:
    """Subclasses name their fields, in order, in FIELDS."""

    __slots__ = ()
    FIELDS: tuple = ()

    def __eq__(self, other):
        if other.__class__ is not self.__class__:
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.FIELDS)

    __hash__ = None     # mutable and equal by value: unhashable, as an eq dataclass

    def __repr__(self) -> str:
        return (f"{type(self).__name__}("
                + ", ".join(f"{name}={getattr(self, name)!r}" for name in self.FIELDS) + ")")

    def copy(self):
        """A shallow copy (what dataclasses.replace made with no changes)."""
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        return new
