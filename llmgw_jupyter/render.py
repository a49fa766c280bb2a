"""Untrusted text (agent answers, prompts, event summaries, error messages) as safe HTML.

Everything a job produces may come from a grant's agent or from a model that obeys a hostile
prompt, so it is data, never markup: Markdown is rendered by markdown-it-py with raw HTML
switched off, links keep only allow-listed schemes, images become plain links (nothing loads by
itself, which also keeps an agent from learning when the owner looks), and very long text is
clipped with a visible note. Framework-free: the kernel (widgets, reprs, magics) and anything
else that puts job text into a browser uses these functions.
"""

from __future__ import annotations

import html
import re
from collections.abc import Sequence

from markdown_it import MarkdownIt
from markdown_it.renderer import RendererHTML
from markdown_it.token import Token
from markdown_it.utils import EnvType, OptionsDict

__all__ = [
    "MAX_RENDER_CHARS",
    "SAFE_URL_SCHEMES",
    "clip",
    "escape_markdown",
    "escape_text",
    "is_safe_url",
    "markdown_to_html",
    "text_to_html",
]

MAX_RENDER_CHARS = 200_000
"""Longer text is cut here before rendering (a note says so): a browser tab is no log viewer."""
SAFE_URL_SCHEMES = frozenset({"http", "https", "mailto"})
"""Link schemes that survive; a URL without a scheme (relative, ``#anchor``) survives too."""
LINK_REL = "noopener noreferrer nofollow"

# Browsers drop ASCII tab/newline anywhere in a URL and leading control characters and spaces
# before reading the scheme ("java\tscript:" is javascript:), so the check does the same.
_IGNORED_IN_URL = re.compile(r"[\x00-\x20\x7f]")
_SCHEME = re.compile(r"^([a-z][a-z0-9+.\-]*):", re.IGNORECASE)


def escape_text(text: object) -> str:
    """Any value as HTML text (quotes too, so it is safe inside attribute values)."""
    return html.escape(str(text), quote=True)


# Characters with a meaning anywhere in a line (emphasis, code, links, HTML, entities, tables,
# math) and those that only mean something at its start (headings, lists, quotes, rules).
_MARKDOWN_SPECIAL = re.compile(r"([\\`*_{}\[\]#<>&|~^$])")
_MARKDOWN_LINE_START = re.compile(r"^([-+=]|\d+[.)])")


def escape_markdown(text: object, *, limit: int = MAX_RENDER_CHARS) -> str:
    """Any value as Markdown that renders as that literal text: no markup, links or HTML.

    Punctuation that means something is backslash-escaped (CommonMark allows it for every
    ASCII punctuation character), leading spaces cannot start a code block and each newline is
    a hard line break.
    """
    source, note = clip(str(text), limit)
    lines = []
    for line in source.splitlines():
        stripped = line.lstrip(" \t")
        escaped = _MARKDOWN_SPECIAL.sub(r"\\\1", stripped)
        escaped = _MARKDOWN_LINE_START.sub(
            lambda m: m.group(0)[:-1] + "\\" + m.group(0)[-1], escaped
        )
        lines.append("&nbsp;" * (len(line) - len(stripped)) + escaped or "&nbsp;")
    if note is not None:
        lines.append("*" + _MARKDOWN_SPECIAL.sub(r"\\\1", note) + "*")
    return "\\\n".join(lines)


def clip(text: str, limit: int = MAX_RENDER_CHARS) -> tuple[str, str | None]:
    """``text`` cut to ``limit`` characters, and the note to show when it was cut."""
    if len(text) <= limit:
        return text, None
    return text[:limit], (
        f"… clipped: {len(text):,} characters in all, the first {limit:,} are shown"
    )


def is_safe_url(url: str) -> bool:
    """True for http(s) and mailto URLs and for URLs without a scheme (relative, anchors)."""
    cleaned = _IGNORED_IN_URL.sub("", html.unescape(url))
    match = _SCHEME.match(cleaned)
    if match is None:
        # "&#106;avascript:" and friends were unescaped above; a colon before any slash, query
        # or fragment still means a scheme the regex did not accept (e.g. "1x:"), so refuse it.
        head = re.split(r"[/?#]", cleaned, maxsplit=1)[0]
        return ":" not in head
    return match.group(1).lower() in SAFE_URL_SCHEMES


class _SafeMarkdown(MarkdownIt):
    """CommonMark (plus tables and strikethrough) with raw HTML off and allow-listed links."""

    def __init__(self) -> None:
        # breaks: a single newline is a line break, as the prompt's author (and the echo model,
        # which repeats it) meant it; chat answers are written that way too.
        super().__init__(
            "commonmark", {"html": False, "linkify": False, "typographer": False, "breaks": True}
        )
        self.enable(["table", "strikethrough"])
        self.add_render_rule("link_open", _render_link_open)
        self.add_render_rule("image", _render_image)

    def validateLink(self, url: str) -> bool:
        """markdown-it-py's hook (and name): a link or image whose URL fails stays text."""
        return is_safe_url(url)


def _render_link_open(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """Links open in a new tab, never hand the lab's URL or window to the target."""
    token = tokens[idx]
    if not is_safe_url(str(token.attrGet("href") or "")):  # validateLink already refused these
        token.attrs.pop("href", None)
    token.attrSet("rel", LINK_REL)
    token.attrSet("target", "_blank")
    return self.renderToken(tokens, idx, options, env)


def _render_image(
    self: RendererHTML, tokens: Sequence[Token], idx: int, options: OptionsDict, env: EnvType
) -> str:
    """An image as a link to it (or its alt text): nothing is fetched without a click."""
    token = tokens[idx]
    alt = self.renderInlineAsText(token.children or [], options, env)
    label = f"image: {alt}" if alt else "image"
    src = str(token.attrGet("src") or "")
    if not src or not is_safe_url(src):
        return f'<span class="llmgw-image">[{escape_text(label)}]</span>'
    return (
        f'<a class="llmgw-image" href="{escape_text(src)}" rel="{LINK_REL}" target="_blank">'
        f"[{escape_text(label)}]</a>"
    )


_MARKDOWN = _SafeMarkdown()


def markdown_to_html(text: str | None, *, limit: int = MAX_RENDER_CHARS) -> str:
    """Untrusted Markdown as HTML that carries no markup of its own: no tags, attributes,
    scripts or unsafe links from ``text`` survive, only what Markdown itself produces.
    """
    source, note = clip(text or "", limit)
    rendered = _MARKDOWN.render(source)
    if note is not None:
        rendered += f'<p class="llmgw-clipped"><i>{escape_text(note)}</i></p>'
    return rendered


def text_to_html(text: object, *, limit: int = MAX_RENDER_CHARS) -> str:
    """Untrusted plain text as escaped HTML (clipped like Markdown); line breaks are kept."""
    source, note = clip(str(text), limit)
    escaped = escape_text(source).replace("\n", "<br>")
    return escaped if note is None else f"{escaped}<br><i>{escape_text(note)}</i>"
