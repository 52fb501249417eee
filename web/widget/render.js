/*
 * Companion widget: an answer's text (untrusted model output) into DOM while it streams.
 *
 * With the libraries (/widget/libs.js: markdown-it, DOMPurify, highlight.js, KaTeX) the text is
 * Markdown: markdown-it with raw HTML off (a `<script>` the model writes is shown as text),
 * fenced code highlighted by highlight.js, `$…$`, `$$…$$`, `\(…\)`, `\[…\]` kept as math;
 * the HTML is then sanitised by DOMPurify (an allowlist of tags and attributes, no `style`,
 * links only http(s), mailto or relative, no images), and only after that are the math spans
 * typeset by KaTeX (to MathML: no fonts, no inline styles) and `[n]` markers turned into links
 * to their source. Without the libraries the text is shown as text, with the same citation
 * links.
 *
 * While deltas arrive, only the last block is rendered again: the text is cut after its last
 * blank line outside a code fence or display math, the blocks before the cut are rendered once
 * each and kept, the tail is replaced. The blocks already shown never move or flicker.
 */

const MATH_CLASS = 'cc-math';
const CITATION = /\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]/g;
const SANITIZE = {
  ALLOWED_TAGS: [
    'p', 'br', 'strong', 'em', 'del', 's', 'code', 'pre', 'blockquote', 'ul', 'ol', 'li', 'a',
    'h1', 'h2', 'h3', 'h4', 'h5', 'h6', 'hr', 'table', 'thead', 'tbody', 'tr', 'th', 'td',
    'span', 'div', 'sup', 'sub',
  ],
  ALLOWED_ATTR: ['href', 'title', 'class', 'start', 'data-display'],
  // http(s), mailto, and relative references; never javascript:, data:, vbscript: …
  ALLOWED_URI_REGEXP: /^(?:(?:https?|mailto):|[^a-z]|[a-z+.-]+(?:[^a-z+.\-:]|$))/i,
  ALLOW_DATA_ATTR: false,
  RETURN_DOM_FRAGMENT: true,
};

/** A link target that is http(s) or mailto (or relative to `base`), else null. */
function safeLink(url, base) {
  if (!url) return null;
  try {
    const parsed = new URL(url, base);
    if (!['http:', 'https:', 'mailto:'].includes(parsed.protocol)) return null;
    return { href: parsed.href, external: parsed.origin !== location.origin };
  } catch {
    return null;
  }
}

/** The markdown-it plugin for math: delimiters only; the TeX is typeset after sanitising. */
function mathPlugin(md) {
  const escape = md.utils.escapeHtml;
  md.inline.ruler.before('escape', 'cc_math', (state, silent) => {
    const src = state.src;
    const at = state.pos;
    let open;
    let close;
    if (src.startsWith('\\(', at)) [open, close] = ['\\(', '\\)'];
    else if (src[at] === '$' && src[at + 1] !== '$') [open, close] = ['$', '$'];
    else return false;
    const from = at + open.length;
    if (open === '$' && (/\s/.test(src[from] || ' '))) return false;
    let end = src.indexOf(close, from);
    while (end > 0 && src[end - 1] === '\\' && open === '$') end = src.indexOf(close, end + 1);
    if (end < 0 || end === from) return false;
    // `$5 and $6`: a closing `$` before white space-less digits is money, not math.
    if (open === '$' && (/\s/.test(src[end - 1]) || /\d/.test(src[end + 1] || ''))) return false;
    if (!silent) {
      const token = state.push('cc_math_inline', 'span', 0);
      token.content = src.slice(from, end);
    }
    state.pos = end + close.length;
    return true;
  });
  md.block.ruler.before('fence', 'cc_math_block', (state, startLine, endLine, silent) => {
    const lineText = (n) => state.src.slice(state.bMarks[n] + state.tShift[n], state.eMarks[n]);
    const first = lineText(startLine);
    let close;
    if (first.startsWith('$$')) close = '$$';
    else if (first.startsWith('\\[')) close = '\\]';
    else return false;
    if (silent) return true;
    const rest = first.slice(2);
    let content = '';
    let line = startLine;
    if (rest.trimEnd().endsWith(close) && rest.trim().length >= close.length) {
      content = rest.trimEnd().slice(0, -close.length);
    } else {
      const lines = [rest];
      let found = false;
      while (++line < endLine) {
        const text = lineText(line);
        const stop = text.indexOf(close);
        if (stop >= 0) {
          lines.push(text.slice(0, stop));
          found = true;
          break;
        }
        lines.push(text);
      }
      // Still being written: shown as math once closed, as its source until then.
      if (!found) line = endLine - 1;
      content = lines.join('\n');
    }
    state.line = line + 1;
    const token = state.push('cc_math_block', 'div', 0);
    token.block = true;
    token.content = content;
    token.map = [startLine, state.line];
    return true;
  });
  md.renderer.rules.cc_math_inline = (tokens, i) =>
    `<span class="${MATH_CLASS}" data-display="false">${escape(tokens[i].content)}</span>`;
  md.renderer.rules.cc_math_block = (tokens, i) =>
    `<div class="${MATH_CLASS}" data-display="true">${escape(tokens[i].content)}</div>\n`;
}

/** The Markdown engine over the libraries, or null when they are not there. */
function markdownEngine(libs) {
  const MarkdownIt = libs && libs['markdown-it'];
  const purify = libs && libs.dompurify;
  if (typeof MarkdownIt !== 'function' || !purify || typeof purify.sanitize !== 'function') {
    return null;
  }
  const hljs = libs['highlight.js'] && libs['highlight.js'].newInstance();
  if (hljs) {
    for (const [name, lang] of Object.entries(libs)) {
      if (name.startsWith('highlight.js/')) hljs.registerLanguage(name.slice(13), lang);
    }
    hljs.registerAliases(['py'], { languageName: 'python' });
    hljs.registerAliases(['js'], { languageName: 'javascript' });
    hljs.registerAliases(['sh', 'console'], { languageName: 'bash' });
  }
  const md = new MarkdownIt({
    html: false,
    linkify: true,
    typographer: false,
    highlight(code, lang) {
      if (!hljs || !lang || !hljs.getLanguage(lang)) return '';
      try {
        return hljs.highlight(code, { language: lang, ignoreIllegals: true }).value;
      } catch {
        return '';
      }
    },
  });
  mathPlugin(md);
  // An image becomes a link to it: nothing remote is loaded into the learner's page.
  md.renderer.rules.image = (tokens, i) => {
    const token = tokens[i];
    const alt = md.utils.escapeHtml(token.content || 'image');
    const src = md.utils.escapeHtml(token.attrGet('src') || '');
    return `<a href="${src}" class="cc-image-link">${alt}</a>`;
  };
  return {
    md,
    purify,
    katex: libs.katex && typeof libs.katex.render === 'function' ? libs.katex : null,
  };
}

/** The length of `text`'s part made of finished blocks: up to its last safe blank line. */
function stableLength(text) {
  let cut = 0;
  let fence = null; // the fence that opened a code block, or '$$' / '\\['
  let offset = 0;
  let blank = false;
  for (const line of text.split('\n')) {
    const lineEnd = offset + line.length + 1;
    if (lineEnd > text.length) break; // the last line is still being written
    const trimmed = line.trimStart();
    if (fence) {
      const closes = fence === '$$' || fence === '\\['
        ? trimmed.includes(fence === '$$' ? '$$' : '\\]')
        : trimmed.startsWith(fence) && trimmed.slice(fence.length).trim() === '';
      if (closes) fence = null;
    } else {
      // A new top-level block starts here (a fence or display math included).
      if (blank && line.length && !/^\s/.test(line)) cut = offset;
      const opening = /^(`{3,}|~{3,})/.exec(trimmed);
      if (opening) fence = opening[1];
      else if (/^(\$\$|\\\[)/.test(trimmed)) {
        const kind = trimmed.startsWith('$$') ? '$$' : '\\[';
        const rest = trimmed.slice(2);
        if (!rest.includes(kind === '$$' ? '$$' : '\\]')) fence = kind;
      }
    }
    blank = !fence && line.trim() === '';
    offset = lineEnd;
  }
  return cut;
}

/**
 * Renders answers into containers; `base` is where relative links point (the server), `label`
 * gives the UI strings (the copy button's) in the learner's language.
 */
function createRenderer(libs, base, label) {
  const engine = markdownEngine(libs);

  function citationLink(source, label) {
    const link = safeLink(source.url, base);
    const title = source.section ? `${source.title} — ${source.section}` : source.title;
    if (!link) return h('span', { class: 'cite', title }, label);
    return h('a', {
      class: 'cite',
      href: link.href,
      title,
      target: link.external ? '_blank' : null,
      rel: link.external ? 'noopener noreferrer' : null,
    }, label);
  }

  /*
   * Citation markers such as [2] or [1, 3] whose numbers all match a source become links to
   * it. Markers that look like Python stay text: glued to a name or a call, as in items[1],
   * f()[1] or grid[0][1] (and, in Markdown, anything inside code).
   */
  function linkCitations(text, sources) {
    const parts = [];
    const byNumber = new Map(sources.map((s) => [s.n, s]));
    if (!byNumber.size || !text.includes('[')) return [text];
    let last = 0;
    let lastCitationEnd = -1;
    for (const match of text.matchAll(CITATION)) {
      const pieces = match[1].split(/(\s*,\s*)/);
      const numbers = pieces.filter((_, i) => i % 2 === 0).map(Number);
      const before = text[match.index - 1] || ' ';
      const indexing = /[\w)]/.test(before) || (before === ']' && lastCitationEnd !== match.index);
      if (indexing || !numbers.every((n) => byNumber.has(n))) continue;
      parts.push(text.slice(last, match.index));
      if (numbers.length === 1) {
        parts.push(citationLink(byNumber.get(numbers[0]), match[0]));
      } else {
        parts.push('[');
        pieces.forEach((piece, i) => {
          parts.push(i % 2 === 0 ? citationLink(byNumber.get(Number(piece)), piece) : piece);
        });
        parts.push(']');
      }
      last = match.index + match[0].length;
      lastCitationEnd = last;
    }
    parts.push(text.slice(last));
    return parts;
  }

  /** Plain text with code spans and fences left alone, citation links elsewhere. */
  function plainInto(el, text, sources) {
    const code = /```[\s\S]*?(?:```|$)|`[^`\n]+`/g;
    let last = 0;
    for (const m of text.matchAll(code)) {
      el.append(...linkCitations(text.slice(last, m.index), sources), m[0]);
      last = m.index + m[0].length;
    }
    el.append(...linkCitations(text.slice(last), sources));
  }

  function typeset(fragment) {
    for (const el of fragment.querySelectorAll(`.${MATH_CLASS}`)) {
      const tex = el.textContent;
      const display = el.dataset.display === 'true';
      el.setAttribute('role', 'math');
      el.setAttribute('aria-label', tex);
      if (!engine.katex) continue;
      try {
        // Errors are caught rather than drawn by KaTeX, whose error span has an inline style.
        engine.katex.render(tex, el, {
          displayMode: display, output: 'mathml', throwOnError: true, trust: false, strict: 'ignore',
        });
        el.classList.add('typeset');
      } catch {
        el.textContent = tex;
        el.classList.add('unparsed');
      }
    }
  }

  function decorate(fragment, sources) {
    for (const a of fragment.querySelectorAll('a[href]')) {
      const link = safeLink(a.getAttribute('href'), base);
      if (!link) {
        a.removeAttribute('href');
        continue;
      }
      a.setAttribute('href', link.href);
      if (link.external) {
        a.setAttribute('target', '_blank');
        a.setAttribute('rel', 'noopener noreferrer');
      }
    }
    const walker = document.createTreeWalker(fragment, NodeFilter.SHOW_TEXT, {
      acceptNode: (node) => (node.parentElement && node.parentElement.closest(`pre, code, a, .${MATH_CLASS}`)
        ? NodeFilter.FILTER_REJECT
        : NodeFilter.FILTER_ACCEPT),
    });
    const texts = [];
    while (walker.nextNode()) texts.push(walker.currentNode);
    for (const node of texts) {
      const parts = linkCitations(node.data, sources);
      if (parts.length > 1) node.replaceWith(...parts);
    }
    for (const pre of fragment.querySelectorAll('pre')) {
      const code = pre.querySelector('code');
      if (code) code.classList.add('hljs');
      const lang = code && /language-([\w+#-]+)/.exec(code.className);
      const wrapper = h('div', { class: 'code-block' });
      pre.replaceWith(wrapper);
      const bar = h('div', { class: 'code-bar' },
        h('span', { class: 'code-lang' }, lang ? lang[1] : ''),
        h('button', {
          type: 'button', class: 'btn btn-small copy', 'data-copy': '', 'aria-label': label('copyCode'),
        }, label('copy')));
      wrapper.append(bar, pre);
    }
  }

  function blockNode(text, sources) {
    const el = h('div', { class: 'block' });
    if (!engine) {
      plainInto(el, text, sources);
      return el;
    }
    const html = engine.md.render(text);
    const fragment = engine.purify.sanitize(html, SANITIZE);
    typeset(fragment);
    decorate(fragment, sources);
    el.append(fragment);
    return el;
  }

  /**
   * Shows `text` in `container`, reusing the blocks `state` says are there already.
   * `finished`: nothing more will come, so the tail is a block like the others.
   */
  function render(container, state, text, sources, finished) {
    const sourcesKey = JSON.stringify(sources.map((s) => [s.n, s.url]));
    const cut = finished ? text.length : (engine ? stableLength(text) : 0);
    if (!text.startsWith(state.committed) || state.sourcesKey !== sourcesKey || cut < state.committed.length) {
      container.textContent = '';
      Object.assign(state, { committed: '', sourcesKey, tail: null });
    }
    if (cut > state.committed.length) {
      const segment = text.slice(state.committed.length, cut);
      const node = blockNode(segment, sources);
      if (state.tail) state.tail.before(node);
      else container.append(node);
      state.committed = text.slice(0, cut);
    }
    const rest = text.slice(cut);
    const tail = rest ? blockNode(rest, sources) : null;
    if (state.tail) state.tail.replaceWith(...(tail ? [tail] : []));
    else if (tail) container.append(tail);
    state.tail = tail;
    if (tail) tail.classList.add('tail');
    container.dataset.renderer = engine ? 'markdown' : 'plain';
  }

  return { render, markdown: Boolean(engine) };
}
