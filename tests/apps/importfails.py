"""A WSGI app module that fails while it is imported: the worker cannot boot."""

from __future__ import annotations

raise RuntimeError("importfails: this module refuses to be imported")
