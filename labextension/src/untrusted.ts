/**
 * Rendering of untrusted job text (agent answers) in the panel.
 *
 * Answers come from agents and models, so they are data: the panel renders
 * them as Markdown through JupyterLab's pipeline, but with its own strict
 * sanitizer that does not depend on the owner's sanitizer settings. Only
 * Markdown's own elements survive, links keep only http(s) and mailto,
 * images become text (nothing loads by itself), no command-linker or style
 * attributes pass, and TeX is not typeset (MathJax's \href, \style and
 * \class would give answers markup again).
 */
import type { IRenderMime } from '@jupyterlab/rendermime';

/** Link schemes that survive; everything else (and relative links) loses its href. */
const SAFE_LINK = /^(https?|mailto):/i;
/** What browsers ignore inside a URL before reading its scheme. */
// eslint-disable-next-line no-control-regex
const IGNORED_IN_URL = /[\u0000-\u0020\u007f]/g;

export const LINK_REL = 'noopener noreferrer nofollow';

/** True for absolute http(s) and mailto URLs only. */
export function isSafeLink(href: string | undefined | null): boolean {
  if (!href) {
    return false;
  }
  return SAFE_LINK.test(href.replace(IGNORED_IN_URL, ''));
}

interface ITransformed {
  tagName: string;
  attribs: { [name: string]: string };
  text?: string;
}

/** An anchor keeps its href only when safe; it opens apart from the lab. */
export function transformLink(
  _tagName: string,
  attribs: { [name: string]: string }
): ITransformed {
  const kept: { [name: string]: string } = {
    rel: LINK_REL,
    target: '_blank'
  };
  if (isSafeLink(attribs.href)) {
    kept.href = attribs.href;
  }
  if (attribs.title) {
    kept.title = attribs.title;
  }
  return { tagName: 'a', attribs: kept };
}

/** An image becomes its alt text in brackets: nothing is fetched. */
export function transformImage(
  _tagName: string,
  attribs: { [name: string]: string }
): ITransformed {
  const alt = attribs.alt ? `: ${attribs.alt}` : '';
  return {
    tagName: 'span',
    attribs: { class: 'llmgw-image' },
    text: `[image${alt}]`
  };
}

/** Elements Markdown produces; anything else is dropped (its text stays). */
export const ALLOWED_TAGS = [
  'a',
  'b',
  'blockquote',
  'br',
  'code',
  'del',
  'em',
  'h1',
  'h2',
  'h3',
  'h4',
  'h5',
  'h6',
  'hr',
  'i',
  'img',
  'kbd',
  'li',
  'ol',
  'p',
  'pre',
  's',
  'span',
  'strong',
  'sub',
  'sup',
  'table',
  'tbody',
  'td',
  'th',
  'thead',
  'tr',
  'ul'
];

/**
 * sanitize-html options handed through JupyterLab's Sanitizer; they replace
 * (not extend) its permissive defaults.
 */
export const UNTRUSTED_OPTIONS = {
  allowedTags: ALLOWED_TAGS,
  allowedAttributes: {
    a: ['href', 'title', 'rel', 'target'],
    code: ['class'],
    span: ['class'],
    ol: ['start'],
    td: ['align'],
    th: ['align']
  },
  allowedStyles: {},
  allowedSchemes: ['http', 'https', 'mailto'],
  allowedSchemesByTag: {},
  allowedSchemesAppliedToAttributes: ['href', 'src', 'cite'],
  allowProtocolRelative: false,
  transformTags: { a: transformLink, img: transformImage }
};

/**
 * A sanitizer for untrusted text: JupyterLab's sanitizer (`base`, a fresh
 * one so the owner's settings cannot widen it) with the options above.
 */
export class UntrustedSanitizer implements IRenderMime.ISanitizer {
  constructor(private _base: IRenderMime.ISanitizer) {}

  readonly allowNamedProperties = false;
  readonly allowCommandLinker = false;

  getAutolink(): boolean {
    return false;
  }

  sanitize(dirty: string): string {
    return this._base.sanitize(
      dirty,
      UNTRUSTED_OPTIONS as IRenderMime.ISanitizerOptions
    );
  }
}

/** A typesetter that leaves TeX as text. */
export const NO_TYPESETTING: IRenderMime.ILatexTypesetter = {
  typeset: () => undefined
};
