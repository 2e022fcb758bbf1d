"""The one way report HTML is built: small functions over escaped text.

Every value put into a page goes through :func:`markupsafe.escape` (the escaping Jinja2
uses) unless it is already :class:`~markupsafe.Markup` -- the output of these functions --
so a note, a file name or a country name can never inject markup. A template engine would
add a second language for the same few tables and lists; these helpers keep the report code
Python (measured: the three jobs' report sections are shorter this way than as templates).

>>> str(table(["a", "b"], [[1, "<x>"]]))
'<table><tr><th>a</th><th>b</th></tr><tr><td>1</td><td>&lt;x&gt;</td></tr></table>'
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

from markupsafe import Markup, escape

__all__ = ["Markup", "escape", "tag", "tag_void", "table", "ul", "p", "join", "code", "b"]


def _attrs(attrs: dict) -> str:
    out = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        name = key.rstrip("_").replace("_", "-")
        out.append(f' {name}="{escape(value)}"')
    return "".join(out)


def tag(name: str, *children: Any, **attrs: Any) -> Markup:
    """``<name attrs>children</name>``; children are escaped unless they are Markup.

    Attribute names: a trailing ``_`` is dropped (``class_``), ``_`` becomes ``-``
    (``data_file``).
    """
    inner = "".join(str(escape(c)) for c in children if c is not None)
    return Markup(f"<{name}{_attrs(attrs)}>{inner}</{name}>")


def tag_void(name: str, **attrs: Any) -> Markup:
    """An element without content (``<img ...>``)."""
    return Markup(f"<{name}{_attrs(attrs)}>")


def join(parts: Iterable[Any], sep: str = "") -> Markup:
    """Escaped parts joined by ``sep`` (itself escaped)."""
    return Markup(escape(sep)).join(escape(x) for x in parts)


def p(*children: Any, **attrs: Any) -> Markup:
    return tag("p", *children, **attrs)


def b(text: Any) -> Markup:
    return tag("b", text)


def code(text: Any) -> Markup:
    return tag("code", text)


def ul(items: Iterable[Any], **attrs: Any) -> Markup:
    """A bulleted list (empty markup for no items)."""
    items = list(items)
    if not items:
        return Markup("")
    return tag("ul", *(tag("li", i) for i in items), **attrs)


def table(header: Sequence[Any] | None, rows: Iterable[Sequence[Any]], **attrs: Any) -> Markup:
    """A table: one ``<th>`` row (``header``, optional), then a ``<td>`` row per row.

    A cell is a value (escaped; numbers as ``str``) or Markup (e.g. ``tag("td", ...,
    colspan=4)`` is not needed: give ``Markup`` of a formatted figure).
    """
    head = tag("tr", *(tag("th", h) for h in header)) if header else Markup("")
    body = join(tag("tr", *(tag("td", c) for c in row)) for row in rows)
    return tag("table", head, body, **attrs)
