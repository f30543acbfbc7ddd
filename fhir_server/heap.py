"""The cyclic garbage collector kept out of stretches that allocate containers by the hundred
thousand, none of them cyclic garbage (records parsed and judged, Consents read): freed by
reference counting, they would only make the collector walk every live object again and again
(the catalogue, the Consents, what a pass keeps), with the event loop held."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def uncollected() -> Iterator[None]:
    """No collection inside; the collector as it was after (a stretch entered while another
    holds it off leaves it to that one to turn it back on)."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
