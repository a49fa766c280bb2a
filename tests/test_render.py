"""``llmgw_jupyter.render``: untrusted Markdown and text become HTML with no markup of their own.

The checks parse the produced HTML (the standard library's parser, as a browser tokenises it)
and look at every element and attribute, rather than searching for substrings: the payload's
text is meant to stay visible, only never as markup.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from html.parser import HTMLParser

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from markdown_it import MarkdownIt

from llmgw_jupyter.render import (
    MAX_RENDER_CHARS,
    clip,
    escape_markdown,
    escape_text,
    is_safe_url,
    markdown_to_html,
    text_to_html,
)

# What Markdown itself may produce; anything else came from the input.
MARKDOWN_TAGS = {
    "p", "br", "em", "strong", "code", "pre", "blockquote", "ul", "ol", "li", "hr", "a", "span",
    "h1", "h2", "h3", "h4", "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "s", "i",
}  # fmt: skip
ALLOWED_ATTRIBUTES = {"href", "rel", "target", "class", "title", "start", "style"}


@dataclass
class Element:
    tag: str
    attrs: dict[str, str | None]


@dataclass
class Parsed(HTMLParser):
    elements: list[Element] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        super().__init__(convert_charrefs=True)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append(Element(tag, dict(attrs)))

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def hrefs(self) -> list[str]:
        return [str(e.attrs["href"]) for e in self.elements if e.attrs.get("href") is not None]


def parse(markup: str) -> Parsed:
    parsed = Parsed()
    parsed.feed(markup)
    parsed.close()
    return parsed


def assert_inert(markup: str) -> Parsed:
    """Only Markdown's own elements, no event handlers or sources, every link allow-listed."""
    parsed = parse(markup)
    for element in parsed.elements:
        assert element.tag in MARKDOWN_TAGS, f"<{element.tag}> came through: {markup!r}"
        assert set(element.attrs) <= ALLOWED_ATTRIBUTES, f"{element}: {markup!r}"
        assert "style" not in element.attrs or element.tag in ("th", "td"), element
    for href in parsed.hrefs:
        scheme = href.split(":", 1)[0].lower() if ":" in href.split("/", 1)[0] else ""
        assert scheme in ("", "http", "https", "mailto"), f"unsafe href {href!r}"
    lowered = markup.lower()
    assert "<script" not in lowered and "<iframe" not in lowered and "<svg" not in lowered
    assert "<img" not in lowered, "images never load by themselves"
    return parsed


PAYLOADS = {
    "img onerror": ('<img src=x onerror="window.__xss=1">', '<img src=x onerror="window.__xss=1">'),
    "script": ("<script>window.__xss=1</script>", "<script>window.__xss=1</script>"),
    "script block": ("<script>\nwindow.__xss=1\n</script>\n", "window.__xss=1"),
    "iframe": (
        '<iframe src="javascript:window.__xss=1"></iframe>',
        '<iframe src="javascript:window.__xss=1"></iframe>',
    ),
    "svg onload": ('<svg onload="window.__xss=1"></svg>', '<svg onload="window.__xss=1">'),
    "anchor tag": ('<a href="javascript:window.__xss=1">go</a>', '<a href="javascript:'),
    "markdown javascript link": ("[go](javascript:window.__xss=1)", "javascript:window.__xss=1"),
    "mixed-case scheme": ("[go](JaVaScRiPt:window.__xss=1)", "JaVaScRiPt:window.__xss=1"),
    "entity-encoded scheme": ("[go](javascript&#58;window.__xss=1)", "[go]("),
    "hex entity letter": ("[go](&#x6A;avascript:window.__xss=1)", "avascript:window.__xss=1"),
    "tab inside scheme": ("[go](java\tscript:window.__xss=1)", "script:window.__xss=1"),
    "vbscript": ("[go](vbscript:msgbox(1))", "vbscript:msgbox(1)"),
    "file": ("[go](file:///etc/passwd)", "file:///etc/passwd"),
    "data html": ("[go](data:text/html,<script>window.__xss=1</script>)", "data:text/html"),
    "data image": ("![x](data:image/svg+xml;base64,PHN2Zz4=)", "data:image/svg+xml"),
    "javascript image": ("![x](javascript:window.__xss=1)", "javascript:window.__xss=1"),
    "autolink javascript": ("<javascript:window.__xss=1>", "<javascript:window.__xss=1>"),
    "reference link": ("[go][r]\n\n[r]: javascript:window.__xss=1", "[go][r]"),
    "entities": ("&lt;script&gt;window.__xss=1&lt;/script&gt;", "<script>window.__xss=1"),
    "html comment": ("<!-- x --><img src=x onerror=window.__xss=1>", "<!-- x -->"),
    "attribute breakout in code info": (
        '```x" onmouseover="window.__xss=1\ncode\n```',
        "code",
    ),
    "style tag": ("<style>body{display:none}</style>", "<style>"),
    "form": ('<form action="http://evil"><button>ok</button></form>', "<button>ok</button>"),
}


@pytest.mark.parametrize("payload,visible", PAYLOADS.values(), ids=list(PAYLOADS))
def test_payloads_stay_text(payload: str, visible: str) -> None:
    parsed = assert_inert(markdown_to_html(payload))
    assert visible in parsed.text, "the payload is shown as text, not dropped silently"


def test_links_keep_only_allowed_schemes_and_open_apart() -> None:
    markup = markdown_to_html(
        "[web](https://example.org/a?b=1) [plain](http://example.org) [mail](mailto:a@b.org) "
        "[rel](docs/readme.md) [anchor](#part) <https://example.org/auto>"
    )
    parsed = assert_inert(markup)
    assert parsed.hrefs == [
        "https://example.org/a?b=1",
        "http://example.org",
        "mailto:a@b.org",
        "docs/readme.md",
        "#part",
        "https://example.org/auto",
    ]
    links = [e for e in parsed.elements if e.tag == "a"]
    assert all(e.attrs["rel"] == "noopener noreferrer nofollow" for e in links)
    assert all(e.attrs["target"] == "_blank" for e in links)


def test_an_image_becomes_a_link_to_it_and_loads_nothing() -> None:
    parsed = assert_inert(markdown_to_html('![a chart](https://example.org/c.png "t")'))
    assert parsed.hrefs == ["https://example.org/c.png"]
    assert "[image: a chart]" in parsed.text


def test_normal_markdown_still_renders() -> None:
    source = (
        "# Title\n\nSome *emphasis*, **strong**, `x < y` and ~~gone~~.  \nA hard break.\n\n"
        "- one\n- two\n\n1. first\n2. second\n\n> quoted\n\n"
        "```python\nif a < b and c > d:\n    print('<tag>')\n```\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |\n"
    )
    markup = markdown_to_html(source)
    parsed = assert_inert(markup)
    tags = [e.tag for e in parsed.elements]
    for tag in ("h1", "em", "strong", "code", "s", "br", "ul", "ol", "li", "blockquote", "pre"):
        assert tag in tags, f"no <{tag}> in {markup!r}"
    assert "table" in tags and "td" in tags
    assert "print('<tag>')" in parsed.text and "x < y" in parsed.text
    assert '<code class="language-python">' in markup


def test_long_text_is_clipped_with_a_note() -> None:
    long = "a" * (MAX_RENDER_CHARS + 10)
    markup = markdown_to_html(long)
    parsed = parse(markup)
    assert parsed.text.count("a") < MAX_RENDER_CHARS + 10
    assert f"{MAX_RENDER_CHARS + 10:,} characters in all" in parsed.text
    assert clip("short") == ("short", None)
    assert clip("abcdef", 3)[0] == "abc"
    plain = text_to_html("x" * 20, limit=5)
    assert plain.startswith("xxxxx<br><i>") and "20 characters in all" in plain


def test_plain_text_is_escaped_with_its_line_breaks() -> None:
    markup = text_to_html('<img src=x onerror="window.__xss=1">\nnext')
    assert parse(markup).elements == [Element("br", {})]
    assert escape_text("\"a\" & 'b' <c>") == "&quot;a&quot; &amp; &#x27;b&#x27; &lt;c&gt;"


@pytest.mark.parametrize(
    "url,safe",
    [
        ("https://example.org", True),
        ("HTTP://example.org", True),
        ("mailto:a@b.org", True),
        ("relative/path:with-colon", True),
        ("#anchor", True),
        ("?q=a:b", True),
        ("//example.org/x", True),
        ("javascript:alert(1)", False),
        (" javascript:alert(1)", False),
        ("\x01javascript:alert(1)", False),
        ("java\nscript:alert(1)", False),
        ("jav&#x61;script:alert(1)", False),
        ("vbscript:x", False),
        ("data:text/html,x", False),
        ("file:///etc/passwd", False),
        ("1javascript:x", False),
    ],
)
def test_url_allow_list(url: str, safe: bool) -> None:
    assert is_safe_url(url) is safe


# Pieces that Markdown and HTML give meaning to, mixed with arbitrary text by hypothesis.
FRAGMENTS = [
    "<", ">", "&", '"', "'", "`", "[", "]", "(", ")", "!", ":", "\n", " ", "*", "#",
    "javascript", "data", "script", "img", "onerror=", "src=", "href=", "svg",
    "iframe", "&#58;", "&#x6A;", "\t", "<!--", "-->", "```", "    ", "|",
]  # fmt: skip


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=5), max_size=40).map("".join))
def test_any_input_renders_inert(text: str) -> None:
    assert_inert(markdown_to_html(text))


def test_single_newlines_stay_line_breaks() -> None:
    """The echo model repeats the prompt: its lines must not run together."""
    parsed = assert_inert(markdown_to_html("first line\nsecond line"))
    assert [e.tag for e in parsed.elements] == ["p", "br"]


# A Markdown renderer that lets raw HTML through (as trusted notebook outputs are rendered)
# and links words: escaped text must stay text even there.
PERMISSIVE = MarkdownIt("commonmark", {"html": True}).enable(["table", "strikethrough"])


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(FRAGMENTS) | st.text(max_size=5), max_size=40).map("".join))
def test_escaped_markdown_is_the_literal_text_in_any_renderer(text: str) -> None:
    parsed = parse(PERMISSIVE.render(escape_markdown(text)))
    assert {e.tag for e in parsed.elements} <= {"p", "br", "em"}, parsed.elements
    shown = parsed.text.replace("\xa0", " ").replace("\n", "")
    expected = "".join(line if line.strip(" \t") else " " for line in text.splitlines())
    expected = expected.replace("\x00", "\ufffd")  # CommonMark's rule for NUL
    assert shown.split() == expected.split() or not expected.strip()


def test_escaped_markdown_keeps_lines_and_clips() -> None:
    markup = PERMISSIVE.render(escape_markdown("# not a title\n<b>not bold</b>\n[x](javascript:y)"))
    parsed = parse(markup)
    assert [e.tag for e in parsed.elements] == ["p", "br", "br"]
    assert "# not a title" in parsed.text and "<b>not bold</b>" in parsed.text
    clipped = escape_markdown("y" * 30, limit=10)
    assert clipped.count("y") == 10 and "30 characters in all" in clipped
