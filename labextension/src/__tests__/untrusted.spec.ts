import { describe, expect, it } from 'vitest';

import {
  isSafeLink,
  LINK_REL,
  transformImage,
  transformLink,
  UNTRUSTED_OPTIONS,
  UntrustedSanitizer
} from '../untrusted';

describe('isSafeLink', () => {
  it.each([
    'https://example.org/a?b=1',
    'http://example.org',
    'HTTPS://EXAMPLE.ORG',
    'mailto:a@b.org'
  ])('keeps %s', href => {
    expect(isSafeLink(href)).toBe(true);
  });

  it.each([
    'javascript:alert(1)',
    ' javascript:alert(1)',
    'java\tscript:alert(1)',
    'JaVaScRiPt:alert(1)',
    'vbscript:x',
    'data:text/html,<script>x</script>',
    'file:///etc/passwd',
    'docs/readme.md',
    '//example.org/x',
    '#anchor',
    '',
    undefined
  ])('drops %s', href => {
    expect(isSafeLink(href)).toBe(false);
  });
});

describe('transforms', () => {
  it('keeps only a safe href, title, rel and target on links', () => {
    expect(
      transformLink('a', {
        href: 'javascript:alert(1)',
        onclick: 'alert(1)',
        'data-commandlinker-command': 'terminal:create-new'
      })
    ).toEqual({ tagName: 'a', attribs: { rel: LINK_REL, target: '_blank' } });
    expect(
      transformLink('a', { href: 'https://example.org', title: 't' })
    ).toEqual({
      tagName: 'a',
      attribs: {
        href: 'https://example.org',
        title: 't',
        rel: LINK_REL,
        target: '_blank'
      }
    });
  });

  it('turns images into their alt text', () => {
    expect(
      transformImage('img', { src: 'x', alt: 'a chart', onerror: 'x' })
    ).toEqual({
      tagName: 'span',
      attribs: { class: 'llmgw-image' },
      text: '[image: a chart]'
    });
  });

  it('allows no event handler, style or source attribute', () => {
    const allowed = Object.values(UNTRUSTED_OPTIONS.allowedAttributes).flat();
    expect(
      allowed.filter(name => /^on|^style$|^src|^data-/i.test(name))
    ).toEqual([]);
    for (const tag of [
      'script',
      'iframe',
      'svg',
      'style',
      'object',
      'form',
      'button'
    ]) {
      expect(UNTRUSTED_OPTIONS.allowedTags).not.toContain(tag);
    }
  });

  it('hands its options to the base sanitizer and never autolinks', () => {
    const seen: unknown[] = [];
    const sanitizer = new UntrustedSanitizer({
      sanitize: (dirty: string, options?: unknown) => {
        seen.push(options);
        return `clean:${dirty}`;
      }
    });
    expect(sanitizer.sanitize('<b>x</b>')).toBe('clean:<b>x</b>');
    expect(seen).toEqual([UNTRUSTED_OPTIONS]);
    expect(sanitizer.getAutolink()).toBe(false);
    expect(sanitizer.allowCommandLinker).toBe(false);
    expect(sanitizer.allowNamedProperties).toBe(false);
  });
});
