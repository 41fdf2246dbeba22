"""Make a message's HTML safe to put into a web page: an allowlist sanitizer on the stdlib HTML parser.

Mail HTML is written by strangers, so the API never returns it as-is (DESIGN.md §5: "HTML served
safely"). The contract of :func:`sanitize_html`:

* only tags in ALLOWED_TAGS survive, with only the attributes in ALLOWED_ATTRS; everything else is
  dropped but its text kept, except DROP_CONTENT tags (script, style, ...) whose content goes too;
* links keep only ``http``, ``https`` and ``mailto`` targets and gain ``rel="noopener noreferrer"``;
* images are removed (their ``alt`` text kept): remote images are tracking beacons, and ``cid:``
  images are reachable as attachments;
* no ``style`` attribute and no event handler (``on*``) ever survives; all text and attribute values
  are re-escaped, so the output is well-formed regardless of the input.

The JSON response also carries the original HTML nowhere: clients wanting the exact source use /raw,
which is served as ``message/rfc822`` with ``Content-Disposition: attachment``.
"""

from __future__ import annotations

import html
from html.parser import HTMLParser

ALLOWED_TAGS = frozenset(
    "a abbr b blockquote br caption center code col colgroup dd del div dl dt em font h1 h2 h3 h4 h5 h6 "
    "hr i ins li ol p pre q s small span strike strong sub sup table tbody td tfoot th thead tr tt u ul"
    .split()
)
VOID_TAGS = frozenset({"br", "hr", "col"})
DROP_CONTENT = frozenset({"script", "style", "iframe", "object", "embed", "noscript", "template", "title",
                          "head", "svg", "math", "select", "textarea", "applet", "frameset", "noembed"})
ALLOWED_ATTRS = frozenset({"href", "title", "alt", "colspan", "rowspan", "align", "valign", "width", "height",
                           "border", "cellpadding", "cellspacing", "color", "bgcolor", "dir", "lang", "face",
                           "size"})
SAFE_SCHEMES = ("http://", "https://", "mailto:")
#: Open tags tracked for closing. Deeper tags are dropped (not emitted), which bounds memory and keeps
#: the closing work linear on hostile input such as 10^6 nested <div>s; real mail nests < 100 deep.
MAX_OPEN = 10_000


class _Sanitizer(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.open: list[str] = []
        self.drop_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in DROP_CONTENT:
            self.drop_depth += 1
            return
        if self.drop_depth:
            return
        if tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self.out.append(html.escape(alt))
            return
        if tag not in ALLOWED_TAGS:
            return
        parts = [tag]
        for name, value in attrs:
            if name not in ALLOWED_ATTRS or value is None:
                continue
            if name == "href":
                v = value.strip()
                if not v.lower().startswith(SAFE_SCHEMES):
                    continue
                value = v
            parts.append(f'{name}="{html.escape(value, quote=True)}"')
        if tag == "a":
            parts.append('rel="noopener noreferrer nofollow" target="_blank"')
        if tag not in VOID_TAGS:
            if len(self.open) >= MAX_OPEN:
                return
            self.open.append(tag)
        self.out.append("<" + " ".join(parts) + ">")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in DROP_CONTENT:
            return
        self.handle_starttag(tag, attrs)
        if tag in ALLOWED_TAGS and tag not in VOID_TAGS and not self.drop_depth:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in DROP_CONTENT:
            self.drop_depth = max(0, self.drop_depth - 1)
            return
        if self.drop_depth or tag not in ALLOWED_TAGS or tag in VOID_TAGS or tag not in self.open:
            return
        while self.open:  # close everything opened inside it, so the output nests properly
            t = self.open.pop()
            self.out.append(f"</{t}>")
            if t == tag:
                break

    def handle_data(self, data: str) -> None:
        if not self.drop_depth:
            self.out.append(html.escape(data, quote=False))


def sanitize_html(source: str) -> str:
    """Return a safe, well-formed subset of ``source`` (see the module contract). Never raises."""
    if not source:
        return ""
    p = _Sanitizer()
    try:
        p.feed(source)
        p.close()
    except Exception:  # noqa: BLE001 - html.parser is lenient; if it ever gives up, fall back to text
        return "<pre>" + html.escape(source, quote=False) + "</pre>"
    while p.open:
        p.out.append(f"</{p.open.pop()}>")
    return "".join(p.out)
