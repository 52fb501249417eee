/*
 * Companion widget: the <companion-chat> element. Vanilla JavaScript (ES2020), no framework, no
 * build step; speaks the WebSocket protocol v1 of docs/protocol.md.
 *
 *   <script src="https://companion.example/widget.js" defer></script>
 *   <companion-chat token="…" course="python-foundations"></companion-chat>
 *
 * Attributes: `server` (default: where widget.js came from), `token` or `token-endpoint` (a
 * URL of the host platform answering `{"token": "…"}` to a POST with its cookies; asked again
 * when the token expires), `course`, `page-url`, `page-title`, `mode` (`floating`: a button
 * that opens the panel, the default; `inline`: the panel in the element's box), `lang` (else
 * the learner's profile locale, else the browser's). Its UI lives in a shadow root (the host's
 * styles do not reach it); CSS custom properties (`--companion-accent`, …; see widget.css)
 * theme it.
 *
 * Model: every question is an "entry" (the learner's ask plus the assistant's reply), keyed by
 * its client id. Entries not finished yet wait in `outbox`, oldest first; only the first one is
 * on the wire, because the server streams one answer per connection. When the socket drops,
 * that first ask is sent again with the same id after reconnecting: the server de-duplicates
 * by id and replays the stored answer (or waits for the one still being written). Questions
 * typed while offline wait in the outbox and are sent once.
 *
 * The conversation in use is remembered per server and learner (localStorage); reopening the
 * page reads it back from the server (`GET /api/v1/conversations/{id}`), not from the tab.
 *
 * Test hooks: element.companion = { send(text), stop(), rate(id, rating), comment(id, text),
 * askMentor(text), attach(text), newConversation(), state() }.
 */

const MAX_CHARS = 4000;
const BACKOFF_MS = [1000, 2000, 5000, 10000];
const PING_EVERY_MS = 25000;
const PONG_TIMEOUT_MS = 10000;
// `busy` can race the end of the previous answer; such asks were not stored, so resend.
const BUSY_RETRY_MS = 400;
const BUSY_RETRIES = 5;
// A question found unanswered in the stored history is asked again only if it is this recent.
const RESUME_MAX_AGE_MS = 10 * 60 * 1000;
const HISTORY_PAGE = 100;
const HISTORY_MAX_PAGES = 5;
const NO_CONVERSATION = '00000000-0000-0000-0000-000000000000';
const DONE_KEY = {
  cancelled: 'cancelled',
  interrupted: 'interrupted',
  failed: 'failed',
};
// Error codes after which the server still sends `done` for the same ask.
const CODES_FOLLOWED_BY_DONE = new Set(['llm_unavailable', 'llm_timeout', 'answer_too_long']);
const COMMENT_MAX_CHARS = 2000;
const QUOTE_MAX_CHARS = 160;
const ANNOUNCE_MAX_CHARS = 1200;
// Feather icons (MIT): thumbs-up and thumbs-down.
const THUMB_PATH = {
  up: 'M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3',
  down: 'M10 15v4a3 3 0 0 0 3 3l4-9V2H5.72a2 2 0 0 0-2 1.7l-1.38 9a2 2 0 0 0 2 2.3zm7-13h2.67A2.31 2.31 0 0 1 22 4v7a2.31 2.31 0 0 1-2.33 2H17',
};

let libsPromise = null;

/** The rendering libraries (/widget/libs.js), loaded once per page; null when unavailable. */
function loadLibs(server) {
  if (window.CompanionWidgetLibs) return Promise.resolve(window.CompanionWidgetLibs);
  if (!libsPromise) {
    libsPromise = new Promise((resolve) => {
      const script = document.createElement('script');
      script.src = `${server}/widget/libs.js`;
      script.async = true;
      script.onload = () => resolve(window.CompanionWidgetLibs || null);
      script.onerror = () => {
        console.warn('[companion] /widget/libs.js is missing: answers are shown as plain text');
        resolve(null);
      };
      document.head.append(script);
    });
  }
  return libsPromise;
}

function newClientId() {
  if (window.crypto && typeof window.crypto.randomUUID === 'function') {
    try { return window.crypto.randomUUID(); } catch { /* insecure context */ }
  }
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 12)}`;
}

// The server counts Unicode characters, not UTF-16 units.
const charCount = (text) => Array.from(text).length;
const str = (value) => (typeof value === 'string' ? value : '');

function jwtClaims(token) {
  try {
    const part = token.split('.')[1];
    const base64 = part.replace(/-/g, '+').replace(/_/g, '/');
    return JSON.parse(atob(base64.padEnd(Math.ceil(base64.length / 4) * 4, '=')));
  } catch {
    return null;
  }
}

function tokenExpired(token) {
  const exp = jwtClaims(token)?.exp;
  // A minute of slack for clocks: the server decides, this only speeds up a refresh.
  return typeof exp === 'number' && exp * 1000 < Date.now() - 60000;
}

const storage = {
  get(key) {
    try { return localStorage.getItem(key); } catch { return null; }
  },
  set(key, value) {
    try { localStorage.setItem(key, value); } catch { /* storage full or disabled */ }
  },
  remove(key) {
    try { localStorage.removeItem(key); } catch { /* storage disabled */ }
  },
};

function thumbIcon(rating) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  for (const [name, value] of Object.entries({
    viewBox: '0 0 24 24', fill: 'none', stroke: 'currentColor', 'stroke-width': '2',
    'stroke-linecap': 'round', 'stroke-linejoin': 'round', 'aria-hidden': 'true', focusable: 'false',
  })) svg.setAttribute(name, value);
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', THUMB_PATH[rating]);
  svg.append(path);
  return svg;
}

/** The panel's markup, every string a `data-t` key filled in by `applyLanguage`. */
function panelMarkup(mode) {
  const launcher = mode === 'floating'
    ? h('button', {
      type: 'button', class: 'launcher', part: 'launcher', 'aria-controls': 'panel',
      'aria-expanded': 'false', 'data-t': 'launcher',
    })
    : null;
  const panel = h('section', { id: 'panel', class: 'panel', part: 'panel', 'data-t-label': 'region' },
    h('div', { class: 'chat-header' },
      h('h2', { class: 'chat-title', id: 'title', 'data-t': 'title' }),
      h('span', { id: 'status', class: 'status', role: 'status', 'data-state': 'idle' }),
      mode === 'floating'
        ? h('button', { type: 'button', id: 'close', class: 'chat-close', 'data-t-label': 'close' }, '×')
        : null,
      h('div', { class: 'header-actions' },
      h('button', { type: 'button', id: 'history', class: 'btn btn-small', 'aria-expanded': 'false', 'aria-controls': 'history-panel', 'data-t': 'history' }),
      h('button', { type: 'button', id: 'privacy', class: 'btn btn-small', 'aria-expanded': 'false', 'aria-controls': 'privacy-panel', 'data-t': 'privacy' }),
      h('button', { type: 'button', id: 'mentor', class: 'btn btn-small btn-mentor', disabled: true, 'data-t': 'mentor', 'data-t-title': 'mentorTitle' }))),
    h('div', { id: 'history-panel', class: 'side-panel', hidden: true, tabindex: '-1', 'aria-labelledby': 'history-title' },
      h('h3', { id: 'history-title', 'data-t': 'historyTitle' }),
      h('button', { type: 'button', id: 'new-conversation', class: 'btn btn-primary', 'data-t': 'newConversation' }),
      h('ul', { id: 'conversations', class: 'conversations' }),
      h('button', { type: 'button', id: 'more-conversations', class: 'btn btn-small', hidden: true, 'data-t': 'loadMore' })),
    h('div', { id: 'privacy-panel', class: 'side-panel', hidden: true, tabindex: '-1', 'aria-labelledby': 'privacy-title' },
      h('h3', { id: 'privacy-title', 'data-t': 'privacyTitle' }),
      h('div', { id: 'privacy-body' })),
    h('div', { id: 'messages', class: 'messages', role: 'log', 'aria-live': 'off', tabindex: '0', 'aria-labelledby': 'title' }),
    h('div', { id: 'announcer', class: 'visually-hidden', 'aria-live': 'polite', 'aria-atomic': 'true' }),
    h('form', { id: 'attach-form', class: 'attach-form', hidden: true },
      h('label', { for: 'attach-text', class: 'visually-hidden', 'data-t': 'attachLabel' }),
      h('textarea', { id: 'attach-text', rows: '4', 'data-t-placeholder': 'attachLabel' }),
      h('button', { type: 'submit', class: 'btn btn-small', 'data-t': 'attachSend' })),
    h('form', { id: 'form', class: 'composer', autocomplete: 'off' },
      h('label', { class: 'visually-hidden', for: 'input', 'data-t': 'input' }),
      h('textarea', { id: 'input', name: 'question', rows: '2', maxlength: String(MAX_CHARS), 'aria-describedby': 'hint counter', 'data-t-placeholder': 'placeholder' }),
      h('div', { class: 'composer-bar' },
        h('button', { type: 'button', id: 'attach', class: 'btn btn-small btn-ghost', 'aria-expanded': 'false', 'aria-controls': 'attach-form', 'data-t': 'attach' }),
        h('span', { id: 'hint', class: 'hint', 'data-t': 'hint' }),
        h('span', { id: 'counter', class: 'counter' }),
        h('button', { type: 'button', id: 'stop', class: 'btn btn-stop', hidden: true, 'data-t': 'stop' }),
        h('button', { type: 'submit', id: 'send', class: 'btn btn-primary', disabled: true, 'data-t': 'send' }))));
  return { launcher, panel };
}

/** The chat behind one element: its state, socket and DOM. */
function createChat(host, shadow, server) {
  const attr = (name) => (host.getAttribute(name) || '').trim();
  const mode = attr('mode') === 'inline' ? 'inline' : 'floating';
  const { launcher, panel } = panelMarkup(mode);
  const root = h('div', { class: `root ${mode}`, 'data-connection': 'idle' });
  const stylesheet = h('link', { rel: 'stylesheet', href: `${server}/widget.css` });
  root.append(...[launcher, panel].filter(Boolean));
  shadow.append(stylesheet, root);
  const byId = (id) => shadow.getElementById(id);
  const ui = {
    messages: byId('messages'),
    form: byId('form'),
    input: byId('input'),
    send: byId('send'),
    stop: byId('stop'),
    status: byId('status'),
    counter: byId('counter'),
    close: byId('close'),
    mentor: byId('mentor'),
    announcer: byId('announcer'),
    history: byId('history'),
    historyPanel: byId('history-panel'),
    conversations: byId('conversations'),
    moreConversations: byId('more-conversations'),
    newConversation: byId('new-conversation'),
    privacy: byId('privacy'),
    privacyPanel: byId('privacy-panel'),
    privacyBody: byId('privacy-body'),
    attach: byId('attach'),
    attachForm: byId('attach-form'),
    attachText: byId('attach-text'),
    launcher,
    panel,
  };

  const page = {
    course: attr('course'),
    url: attr('page-url') || location.pathname,
    title: attr('page-title') || document.title,
  };

  const S = {
    lang: languageOf(attr('lang') || navigator.language),
    connection: 'idle',
    ws: null,
    connecting: false,
    closing: false,
    ready: false,
    protocol: null,
    learner: null,
    token: attr('token') || null,
    conversationId: null,
    usedConversation: false,
    attempt: 0,
    failedBeforeOpen: 0,
    reconnectTimer: null,
    pingTimer: null,
    pongTimer: null,
    pingCount: 0,
    restored: false,
    entries: [],
    byClientId: new Map(),
    outbox: [],
    errors: [],
    requests: [], // feedback and mentor requests sent and not answered yet, oldest first
    mentorRequests: [],
    attachments: [],
    modelOffline: false,
    renderer: createRenderer(null, server, (key) => t(key)),
    conversationsCursor: null,
  };

  const t = (key, vars) => translate(S.lang, key, vars);

  // ---------------------------------------------------------------- language

  function applyLanguage() {
    shadow.host.setAttribute('data-lang', S.lang);
    root.setAttribute('lang', S.lang);
    for (const el of shadow.querySelectorAll('[data-t]')) el.textContent = t(el.dataset.t);
    for (const el of shadow.querySelectorAll('[data-t-label]')) el.setAttribute('aria-label', t(el.dataset.tLabel));
    for (const el of shadow.querySelectorAll('[data-t-title]')) el.title = t(el.dataset.tTitle);
    for (const el of shadow.querySelectorAll('[data-t-placeholder]')) el.placeholder = t(el.dataset.tPlaceholder);
    setConnection(S.connection);
  }

  // ---------------------------------------------------------------- token and conversation

  const conversationKey = () => {
    const subject = S.learner?.id || jwtClaims(S.token || '')?.sub || 'anonymous';
    return `companion:${server}:${subject}:conversation`;
  };

  /** The conversation in use; kept for the next visit once it holds a question (`persist`). */
  function rememberConversation(id, persist) {
    S.conversationId = id;
    if (!id) storage.remove(conversationKey());
    else if (persist) storage.set(conversationKey(), id);
  }

  /** The token to connect with; null when there is none to be had (sign in). */
  async function ensureToken() {
    if (S.token && !tokenExpired(S.token)) return S.token;
    S.token = null;
    const endpoint = attr('token-endpoint');
    if (!endpoint) return null;
    const response = await fetch(new URL(endpoint, location.href), {
      method: 'POST',
      headers: { Accept: 'application/json' },
      credentials: 'include',
    });
    if (response.status === 404 || response.status === 401 || response.status === 403) return null;
    if (!response.ok) throw new Error(`token endpoint: HTTP ${response.status}`);
    const body = await response.json();
    if (!body || typeof body.token !== 'string' || !body.token) {
      throw new Error('token endpoint: no token in the response');
    }
    S.token = body.token;
    return body.token;
  }

  /** A REST call to the server with the learner's token; the parsed JSON or an Error. */
  async function api(path) {
    const response = await fetch(`${server}${path}`, {
      headers: { Authorization: `Bearer ${S.token}`, Accept: 'application/json' },
      cache: 'no-store',
    });
    if (!response.ok) {
      const error = new Error(`HTTP ${response.status}`);
      error.status = response.status;
      throw error;
    }
    return response.json();
  }

  /*
   * A refused upgrade (401 token, 404 foreign conversation, 503 still starting) looks to a
   * browser like any failed connection. After two failures in a row, ask the REST API with
   * the same token which of them it is.
   */
  async function diagnoseRefusedUpgrade() {
    S.failedBeforeOpen += 1;
    if (S.token && tokenExpired(S.token)) {
      S.token = null;
      return;
    }
    if (S.failedBeforeOpen < 2 || !S.token) return;
    let status;
    try {
      await api(`/api/v1/conversations/${encodeURIComponent(S.conversationId || NO_CONVERSATION)}`);
      return;
    } catch (error) {
      status = error.status;
    }
    if (status === 401) S.token = attr('token-endpoint') ? null : S.token;
    else if ((status === 404 || status === 400) && S.usedConversation) rememberConversation(null);
  }

  // ---------------------------------------------------------------- connection

  function setConnection(state, text) {
    S.connection = state;
    const offline = navigator.onLine === false && state !== 'ready' && state !== 'signin';
    const key = offline ? 'offline' : state === 'open' ? 'connecting' : state;
    ui.status.dataset.state = offline ? 'offline' : state;
    ui.status.textContent = text && !offline ? text : (key === 'idle' ? t('connecting') : t(key));
    ui.status.title = state === 'ready' && S.learner ? t('signedInAs', { name: S.learner.name }) : '';
    root.dataset.connection = state;
    host.dataset.connection = state;
    for (const entry of S.outbox) renderMeta(entry);
    for (const entry of S.entries) if (entry.dom && entry.dom.feedback) renderFeedback(entry);
    updateControls();
  }

  function socketUrl(token) {
    const url = new URL('/ws', server);
    url.protocol = url.protocol === 'https:' ? 'wss:' : 'ws:';
    url.searchParams.set('token', token);
    if (S.conversationId) url.searchParams.set('conversation', S.conversationId);
    return url.href;
  }

  async function connect() {
    clearTimeout(S.reconnectTimer);
    S.reconnectTimer = null;
    if (S.ws || S.connecting || S.closing) return;
    S.connecting = true;
    setConnection(S.attempt ? 'reconnecting' : 'connecting');
    let token;
    try {
      token = await ensureToken();
    } catch (error) {
      console.warn('[companion]', error);
      S.connecting = false;
      scheduleReconnect();
      return;
    }
    S.connecting = false;
    if (!token) {
      enterSignIn();
      return;
    }
    if (!S.conversationId) S.conversationId = storage.get(conversationKey());
    let ws;
    try {
      ws = new WebSocket(socketUrl(token));
    } catch (error) {
      console.warn('[companion]', error);
      scheduleReconnect();
      return;
    }
    S.ws = ws;
    S.usedConversation = Boolean(S.conversationId);
    let opened = false;
    ws.onopen = () => {
      if (S.ws !== ws) return;
      opened = true;
      S.failedBeforeOpen = 0;
      setConnection('open');
      startPing();
    };
    ws.onmessage = (event) => {
      if (S.ws === ws) onFrame(event.data);
    };
    ws.onerror = () => { /* a close event follows */ };
    ws.onclose = () => { socketLost(ws, opened); };
  }

  async function socketLost(ws, opened) {
    if (S.ws !== ws) return;
    S.ws = null;
    S.ready = false;
    stopPing();
    requeueActiveAsk();
    dropRequests();
    if (S.closing) return;
    if (opened) S.failedBeforeOpen = 0;
    else await diagnoseRefusedUpgrade();
    scheduleReconnect();
  }

  function scheduleReconnect() {
    if (S.reconnectTimer || S.closing) return;
    const delay = BACKOFF_MS[Math.min(S.attempt, BACKOFF_MS.length - 1)];
    S.attempt += 1;
    setConnection('reconnecting', t('reconnectingIn', { seconds: Math.round(delay / 1000) }));
    S.reconnectTimer = setTimeout(connect, delay);
  }

  function enterSignIn() {
    setConnection('signin');
    ui.input.placeholder = t('signin');
    if (!ui.messages.querySelector('.notice.signin')) {
      notice(t('signin'), { kind: 'info signin', code: 'signin' });
    }
    for (const entry of [...S.outbox]) finish(entry, 'failed');
  }

  function startPing() {
    stopPing();
    S.pingTimer = setInterval(() => {
      if (!S.ready || S.pongTimer) return;
      S.pingCount += 1;
      sendFrame({ type: 'ping', nonce: String(S.pingCount) });
      const ws = S.ws;
      S.pongTimer = setTimeout(() => {
        // Nothing came back: the connection is dead even if the browser has not noticed.
        S.pongTimer = null;
        if (S.ws !== ws) return;
        socketLost(ws, true);
        try { ws.close(4000, 'no pong'); } catch { /* already closed */ }
      }, PONG_TIMEOUT_MS);
    }, PING_EVERY_MS);
  }

  function stopPing() {
    clearInterval(S.pingTimer);
    clearTimeout(S.pongTimer);
    S.pingTimer = null;
    S.pongTimer = null;
  }

  function sendFrame(frame) {
    const ws = S.ws;
    if (!ws || ws.readyState !== 1 /* OPEN */) return false;
    try {
      ws.send(JSON.stringify(frame));
      return true;
    } catch {
      return false;
    }
  }

  // ---------------------------------------------------------------- asks

  function newEntry(fields) {
    return {
      id: fields.id,
      text: fields.text,
      page: fields.page || null,
      course: fields.course || null,
      createdAt: fields.createdAt || Date.now(),
      sent: false,
      acked: false,
      duplicate: false,
      messageId: fields.messageId || null,
      cancelRequested: false,
      busyRetries: 0,
      finished: false,
      restored: Boolean(fields.restored),
      reply: {
        text: '',
        status: 'pending',
        sources: [],
        offline: false,
        replayed: false,
        model: null,
        messageId: null,
        usage: null,
        timings: null,
        error: null,
        nextSeq: 0,
        pending: new Map(), // deltas that arrived ahead of their turn, by seq
        stale: false, // text shown is from before a resend; the next seq 0 replaces it
      },
      feedback: {
        rating: null, // as the server stored it
        sending: null, // the rating on the wire, until the server answers
        note: '',
        error: false,
        askComment: false, // a thumbs-down was just saved: offer the comment box
        comment: null, // the comment the server stored
      },
      render: { committed: '', sourcesKey: null, tail: null },
      dom: null,
    };
  }

  function send(text) {
    const question = String(text ?? '').trim();
    if (!question) return null;
    const length = charCount(question);
    if (length > MAX_CHARS) {
      notice(t('tooLong', { count: length, max: MAX_CHARS }), { code: 'question_too_long' });
      return null;
    }
    if (S.connection === 'signin') {
      notice(t('signin'), { kind: 'info signin', code: 'signin' });
      return null;
    }
    const entry = newEntry({
      id: newClientId(),
      text: question,
      page: { url: page.url, title: page.title },
      course: page.course,
    });
    addEntry(entry);
    renderEntry(entry);
    S.outbox.push(entry);
    scrollToEnd(true);
    pump();
    return entry.id;
  }

  function addEntry(entry) {
    S.entries.push(entry);
    S.byClientId.set(entry.id, entry);
  }

  /** Puts the oldest unfinished ask on the wire when the connection is ready. */
  function pump() {
    const entry = S.outbox[0];
    if (entry && !entry.sent && S.ready) {
      let frame;
      if (entry.resume && entry.messageId && S.conversationId) {
        // Acknowledged before the drop: only the deltas not seen yet, from whichever node.
        frame = { type: 'resume', id: entry.id, conversation: S.conversationId, message_id: entry.messageId };
        if (entry.reply.nextSeq > 0) frame.last_seq = entry.reply.nextSeq - 1;
      } else {
        frame = { type: 'ask', id: entry.id, text: entry.text };
        if (entry.page) frame.page = entry.page;
        if (entry.course) frame.course = entry.course;
      }
      if (sendFrame(frame)) {
        entry.sent = true;
        if (entry.cancelRequested) sendFrame({ type: 'cancel', id: entry.id });
        renderMeta(entry);
        clearAttachments();
      }
    }
    updateControls();
  }

  function stop() {
    const entry = S.outbox[0];
    if (!entry || entry.finished) return false;
    if (!entry.sent) {
      finish(entry, 'cancelled');
      return true;
    }
    entry.cancelRequested = true;
    sendFrame({ type: 'cancel', id: entry.id });
    renderMeta(entry);
    updateControls();
    return true;
  }

  /*
   * The socket went away. An acknowledged ask is resumed after reconnecting (`resume`: the
   * deltas after the last one received, nothing twice); one never acknowledged goes out again,
   * same id, and its answer replaces what was shown.
   */
  function requeueActiveAsk() {
    const entry = S.outbox[0];
    if (!entry || !entry.sent || entry.finished) return;
    if (entry.cancelRequested) {
      finish(entry, 'cancelled');
      return;
    }
    entry.sent = false;
    const reply = entry.reply;
    if (entry.acked && entry.messageId) {
      entry.resume = true;
      entry.acked = false;
      renderMeta(entry);
      return;
    }
    entry.acked = false;
    reply.stale = reply.text.length > 0;
    reply.nextSeq = 0;
    reply.pending.clear();
    renderMeta(entry);
  }

  function finish(entry, status) {
    flushPending(entry);
    const reply = entry.reply;
    entry.finished = true;
    reply.status = status;
    reply.stale = false;
    const index = S.outbox.indexOf(entry);
    if (index >= 0) S.outbox.splice(index, 1);
    renderReply(entry);
    if (!entry.restored) announce(entry);
    if (launcher && !root.classList.contains('open')) launcher.classList.add('unread');
    pump();
  }

  /** Tells a screen reader the answer once it is finished, never token by token. */
  function announce(entry) {
    const reply = entry.reply;
    let text = reply.text ? spokenText(entry.dom.content) : '';
    if (!text) text = statusText(entry);
    if (charCount(text) > ANNOUNCE_MAX_CHARS) text = `${Array.from(text).slice(0, ANNOUNCE_MAX_CHARS).join('')}…`;
    ui.announcer.textContent = '';
    setTimeout(() => { ui.announcer.textContent = t('answerReady', { text }); }, 50);
  }

  /** What a screen reader says for a rendered answer: its text, math as its TeX source. */
  function spokenText(content) {
    const copy = content.cloneNode(true);
    for (const bar of copy.querySelectorAll('.code-bar')) bar.remove();
    for (const math of copy.querySelectorAll('.cc-math')) math.replaceWith(math.getAttribute('aria-label') || math.textContent);
    return copy.textContent.replace(/\s+/g, ' ').trim();
  }

  // ---------------------------------------------------------------- frames in

  function onFrame(data) {
    clearTimeout(S.pongTimer);
    S.pongTimer = null;
    let frame;
    try { frame = JSON.parse(data); } catch { return; }
    if (!frame || typeof frame.type !== 'string') return;
    const entry = typeof frame.id === 'string' ? S.byClientId.get(frame.id) : undefined;
    switch (frame.type) {
      case 'ready': return onReady(frame);
      case 'ack': return entry && onAck(entry, frame);
      case 'sources': return entry && onSources(entry, frame);
      case 'delta': return entry && onDelta(entry, frame);
      case 'done': return entry && onDone(entry, frame);
      case 'feedback_saved': return onFeedbackSaved(frame);
      case 'mentor_requested': return onMentorRequested(frame);
      case 'attached': return onAttached(frame);
      case 'error': return onError(entry, frame);
      default: return undefined; // `pong`, and frame types from a later version
    }
  }

  async function onReady(frame) {
    if (frame.protocol !== 1) {
      console.warn('[companion] server speaks protocol', frame.protocol, '; this widget speaks 1');
    }
    S.protocol = frame.protocol;
    S.learner = frame.learner || null;
    S.attempt = 0;
    S.failedBeforeOpen = 0;
    if (!attr('lang') && S.learner && S.learner.locale) {
      const lang = languageOf(S.learner.locale);
      if (lang !== S.lang) {
        S.lang = lang;
        applyLanguage();
      }
    }
    if (typeof frame.conversation_id === 'string' && frame.conversation_id) {
      rememberConversation(frame.conversation_id);
    }
    if (!S.restored) {
      S.restored = true;
      // Only a conversation that held a question when it was remembered has a history.
      if (S.usedConversation) await restoreHistory();
    }
    S.ready = true;
    setConnection('ready');
    pump();
  }

  function onAck(entry, frame) {
    rememberConversation(S.conversationId, true);
    if (entry.resume) {
      // A resumed answer whose node had stopped is answered again from `seq` 0.
      Object.assign(entry.reply, { stale: entry.reply.text.length > 0, nextSeq: 0 });
      entry.reply.pending.clear();
    }
    entry.acked = true;
    entry.duplicate = Boolean(frame.duplicate);
    entry.messageId = str(frame.message_id) || entry.messageId;
    if (entry.dom) entry.dom.learner.dataset.messageId = entry.messageId || '';
    renderMeta(entry);
  }

  function readSources(list) {
    return (Array.isArray(list) ? list : [])
      .filter((s) => s && typeof s === 'object')
      .map((s, i) => ({
        n: Number.isInteger(s.n) ? s.n : i + 1,
        title: str(s.title) || str(s.section) || str(s.url) || `Source ${i + 1}`,
        section: str(s.section),
        url: str(s.url),
        snippet: str(s.snippet),
      }));
  }

  function onSources(entry, frame) {
    entry.reply.sources = readSources(frame.sources);
    renderSources(entry);
    renderBody(entry); // [n] markers can become links now
    renderMeta(entry);
  }

  function onDelta(entry, frame) {
    const reply = entry.reply;
    const text = str(frame.text);
    const seq = Number.isInteger(frame.seq) ? frame.seq : reply.nextSeq;
    if (seq < reply.nextSeq) return; // already have it
    if (seq > reply.nextSeq) {
      reply.pending.set(seq, text);
      return;
    }
    appendDelta(reply, seq, text);
    while (reply.pending.has(reply.nextSeq)) {
      const next = reply.pending.get(reply.nextSeq);
      reply.pending.delete(reply.nextSeq);
      appendDelta(reply, reply.nextSeq, next);
    }
    if (!entry.finished) reply.status = 'streaming';
    const follow = nearEnd();
    renderBody(entry);
    renderMeta(entry);
    scrollToEnd(follow);
  }

  function appendDelta(reply, seq, text) {
    if (reply.stale) {
      reply.text = '';
      reply.stale = false;
    }
    reply.text += text;
    reply.nextSeq = seq + 1;
  }

  /** At the end, deltas still waiting for a gap are shown in order anyway. */
  function flushPending(entry) {
    const reply = entry.reply;
    if (!reply.pending.size) return;
    const seqs = [...reply.pending.keys()].sort((a, b) => a - b);
    if (reply.stale && seqs[0] > 0) reply.stale = false; // a continuation, not a restart
    for (const seq of seqs) appendDelta(reply, seq, reply.pending.get(seq));
    reply.pending.clear();
  }

  function onDone(entry, frame) {
    const reply = entry.reply;
    reply.offline = Boolean(frame.offline);
    reply.replayed = Boolean(frame.replayed);
    reply.model = str(frame.model) || null;
    reply.messageId = str(frame.message_id) || null;
    reply.usage = frame.usage || null;
    reply.timings = frame.timings || null;
    // A replay with no delta means the stored answer is empty.
    if (reply.stale && reply.replayed) reply.text = '';
    if (reply.offline) showModelOffline();
    const status = str(frame.status) || 'complete';
    const follow = nearEnd();
    finish(entry, status);
    scrollToEnd(follow);
  }

  function showModelOffline() {
    if (S.modelOffline) return;
    S.modelOffline = true;
    root.dataset.model = 'offline';
    notice(t('modelOffline'), { kind: 'info model-offline', code: 'offline_mode' });
  }

  function onError(entry, frame) {
    const code = str(frame.code) || 'internal';
    let message = str(frame.message) || code.replace(/_/g, ' ');
    const wait = Number.isInteger(frame.retry_after) ? frame.retry_after : null;
    if (wait !== null && (code === 'rate_limited' || code === 'quota_exceeded')) {
      message = t('rateLimited', { message, seconds: wait });
    } else if (code === 'companion_paused') {
      message = t('paused', { message });
    }
    S.errors.push({ id: typeof frame.id === 'string' ? frame.id : null, code, message, retryAfter: wait });
    if (!entry) {
      // Errors about `feedback` and `request_mentor` carry no id; replies come in order.
      if (frame.id == null && S.requests.length) {
        settleRequest(S.requests[0], { code, message });
        return;
      }
      notice(message, { code });
      return;
    }
    if (code === 'unknown_ask') return; // a stop that came too late: the answer already ended
    if (code === 'unknown_message' && entry.resume && !entry.finished) {
      // Nothing to resume here: ask again, same id; its answer replaces what was shown.
      entry.resume = false;
      entry.sent = false;
      Object.assign(entry.reply, { stale: entry.reply.text.length > 0, nextSeq: 0 });
      entry.reply.pending.clear();
      pump();
      return;
    }
    const active = !entry.finished && entry.sent;
    // Refused before anything was stored: safe to send again with the same id.
    if (active && code === 'busy' && entry.busyRetries < BUSY_RETRIES) {
      entry.busyRetries += 1;
      entry.sent = false;
      setTimeout(pump, BUSY_RETRY_MS * entry.busyRetries);
      return;
    }
    if (active && (code === 'shutting_down' || code === 'not_ready')) {
      entry.sent = false; // sent again once the connection is ready
      notice(message, { code, id: entry.id, kind: 'info' });
      setTimeout(pump, 3000);
      return;
    }
    entry.reply.error = { code, message };
    notice(message, { code, id: entry.id, kind: code === 'companion_paused' ? 'info paused' : 'error' });
    if (!entry.finished && !CODES_FOLLOWED_BY_DONE.has(code)) finish(entry, 'failed');
    else renderMeta(entry);
  }

  // ---------------------------------------------------------------- rendering

  function nearEnd() {
    const m = ui.messages;
    return m.scrollHeight - m.scrollTop - m.clientHeight < 48;
  }

  function scrollToEnd(really) {
    if (really) ui.messages.scrollTop = ui.messages.scrollHeight;
  }

  function appendToLog(node) {
    const follow = nearEnd();
    ui.messages.append(node);
    scrollToEnd(follow);
  }

  function notice(message, { code = null, id = null, kind = 'error' } = {}) {
    const el = h('div', {
      class: `notice ${kind}`,
      role: kind === 'error' ? 'alert' : 'status',
      'data-code': code,
      'data-id': id,
    }, message);
    appendToLog(el);
    return el;
  }

  function renderEntry(entry, container = ui.messages) {
    const learner = h(
      'div',
      { class: 'msg learner', 'data-id': entry.id, 'data-message-id': entry.messageId },
      h('div', { class: 'msg-body' }, entry.text),
    );
    const content = h('div', { class: 'content' });
    const cursor = h('span', { class: 'cursor', 'aria-hidden': 'true' });
    const body = h('div', { class: 'msg-body' }, content);
    const sourcesLabel = h('p', { class: 'sources-label', hidden: true }, t('sources'));
    const sources = h('ol', { class: 'sources', hidden: true, 'aria-label': t('sources') });
    const status = h('span', { class: 'status' });
    const meta = h('div', { class: 'msg-meta' }, status);
    const assistant = h('div', { class: 'msg assistant', 'data-id': entry.id, 'data-role-label': t('title') }, body, sourcesLabel, sources, meta);
    entry.dom = {
      learner, assistant, body, content, cursor, sourcesLabel, sources, meta, status,
      badge: null, retry: null, feedback: null,
    };
    container.append(learner, assistant);
    renderReply(entry);
  }

  function renderReply(entry) {
    renderBody(entry);
    renderSources(entry);
    renderMeta(entry);
  }

  function renderBody(entry) {
    const { body, content, cursor } = entry.dom;
    S.renderer.render(content, entry.render, entry.reply.text, entry.reply.sources, entry.finished);
    if (!entry.finished) body.append(cursor);
    else cursor.remove();
  }

  function renderSources(entry) {
    const { sources, sourcesLabel } = entry.dom;
    const list = entry.reply.sources;
    sources.textContent = '';
    sources.hidden = list.length === 0;
    sourcesLabel.hidden = list.length === 0;
    for (const source of list) {
      const link = safeLink(source.url, server);
      const title = link
        ? h('a', {
          href: link.href,
          title: source.snippet || null,
          target: link.external ? '_blank' : null,
          rel: link.external ? 'noopener noreferrer' : null,
        }, source.title)
        : h('span', { class: 'source-title', title: source.snippet || null }, source.title);
      const section = source.section && source.section !== source.title
        ? h('span', { class: 'source-section' }, source.section)
        : null;
      sources.append(h('li', { value: source.n, 'data-n': source.n, id: `${entry.id}-source-${source.n}` }, title, section));
    }
  }

  function statusText(entry) {
    const reply = entry.reply;
    if (entry.finished) {
      if (reply.status === 'complete' && !reply.text) return t('noAnswer');
      if (reply.status === 'complete') return '';
      return DONE_KEY[reply.status] ? t(DONE_KEY[reply.status]) : `(${reply.status})`;
    }
    if (entry.cancelRequested) return t('stopping');
    if (!entry.sent) {
      if (S.outbox[0] !== entry) return t('queued');
      return reply.stale ? t('resuming') : t('waiting');
    }
    if (!entry.acked) return t('sending');
    if (reply.text && !reply.stale) return '';
    if (entry.duplicate) return t('fetching');
    return reply.sources.length ? t('writing') : t('searching');
  }

  function renderMeta(entry) {
    const d = entry.dom;
    if (!d) return;
    const reply = entry.reply;
    d.status.textContent = statusText(entry);
    d.assistant.dataset.status = reply.status;
    d.assistant.setAttribute('aria-busy', String(!entry.finished));
    d.assistant.classList.toggle('stale', reply.stale);
    if (reply.replayed) d.assistant.dataset.replayed = 'true';
    if (reply.offline && !d.badge) {
      d.badge = h('span', { class: 'badge offline', title: t('offlineBadgeTitle') }, t('offlineBadge'));
      d.meta.prepend(d.badge);
    }
    if (entry.finished && reply.model) {
      const total = reply.timings && Number.isFinite(reply.timings.total_ms)
        ? ` · ${reply.timings.total_ms} ms`
        : '';
      d.meta.title = `${reply.model}${total}`;
    }
    const canRetry = entry.finished && (reply.status === 'failed' || reply.status === 'interrupted');
    if (canRetry && !d.retry) {
      d.retry = h('button', { type: 'button', class: 'btn btn-small retry' }, t('retry'));
      d.retry.addEventListener('click', () => {
        d.retry.remove();
        send(entry.text);
      });
      d.meta.append(d.retry);
    }
    if (canRate(entry) && !d.feedback) addRatingButtons(entry);
  }

  /** New libraries or a new language: every answer is drawn again. */
  function rerenderAll() {
    for (const entry of S.entries) {
      if (!entry.dom) continue;
      entry.render = { committed: '', sourcesKey: null, tail: null };
      entry.dom.content.textContent = '';
      renderBody(entry);
    }
  }

  // ---------------------------------------------------------------- feedback and mentor

  /** Only a finished, stored answer (complete, offline ones included) can be rated. */
  function canRate(entry) {
    const reply = entry.reply;
    return entry.finished && reply.status === 'complete' && Boolean(reply.messageId && reply.text);
  }

  function addRatingButtons(entry) {
    const d = entry.dom;
    const button = (rating) => {
      const label = t(rating === 'up' ? 'rateUp' : 'rateDown');
      const el = h('button', {
        type: 'button',
        class: `btn btn-rate ${rating}`,
        'aria-label': label,
        title: label,
        'aria-pressed': 'false',
        'data-rating': rating,
      }, thumbIcon(rating));
      el.addEventListener('click', () => rate(entry.id, rating));
      return el;
    };
    d.rateUp = button('up');
    d.rateDown = button('down');
    d.feedbackNote = h('span', { class: 'feedback-note', role: 'status' });
    d.feedback = h('span', { class: 'feedback', role: 'group', 'aria-label': t('rateGroup') },
      d.feedbackNote, d.rateUp, d.rateDown);
    d.meta.append(d.feedback);
    renderFeedback(entry);
  }

  function renderFeedback(entry) {
    const d = entry.dom;
    if (!d || !d.feedback) return;
    const fb = entry.feedback;
    // While a rating is on the wire it shows as chosen; an error puts back the stored one.
    const shown = fb.sending || fb.rating;
    for (const [rating, el] of [['up', d.rateUp], ['down', d.rateDown]]) {
      el.setAttribute('aria-pressed', String(shown === rating));
      el.disabled = !S.ready || Boolean(fb.sending);
      el.classList.toggle('saving', fb.sending === rating);
    }
    d.feedbackNote.textContent = fb.note;
    d.feedbackNote.classList.toggle('error', fb.error);
    d.feedback.dataset.rating = fb.rating || '';
    renderCommentBox(entry);
  }

  /** The "what was wrong?" box under a thumbs-down, until a comment is sent or the rating changes. */
  function renderCommentBox(entry) {
    const d = entry.dom;
    const fb = entry.feedback;
    const wanted = fb.askComment && fb.rating === 'down' && !fb.comment;
    if (!wanted) {
      if (d.commentBox) {
        d.commentBox.remove();
        d.commentBox = null;
      }
      return;
    }
    if (!d.commentBox) {
      const text = h('textarea', {
        class: 'feedback-comment-text',
        rows: '2',
        maxlength: String(COMMENT_MAX_CHARS),
        placeholder: t('commentPlaceholder'),
        'aria-label': t('commentLabel'),
      });
      const submit = h('button', { type: 'submit', class: 'btn btn-small' }, t('send'));
      const box = h('form', { class: 'feedback-comment' }, text, submit);
      box.addEventListener('submit', (event) => {
        event.preventDefault();
        comment(entry.id, text.value);
      });
      d.commentBox = box;
      d.commentText = text;
      d.commentSubmit = submit;
      d.meta.after(box);
      text.focus();
    }
    const sending = fb.sending === 'down';
    d.commentText.disabled = sending;
    d.commentSubmit.disabled = !S.ready || sending;
  }

  /** Rates the answer to the ask with client id `id`; a new rating replaces the stored one. */
  function rate(id, rating) {
    const entry = S.byClientId.get(id);
    if (!entry || !['up', 'down'].includes(rating) || !canRate(entry)) return false;
    const fb = entry.feedback;
    if (fb.sending || fb.rating === rating) return false;
    const frame = { type: 'feedback', message_id: entry.reply.messageId, rating };
    if (!S.ready || !sendFrame(frame)) {
      Object.assign(fb, { note: t('notConnected'), error: true });
      renderFeedback(entry);
      return false;
    }
    Object.assign(fb, { sending: rating, note: t('saving'), error: false });
    S.requests.push({ kind: 'feedback', entry, rating });
    renderFeedback(entry);
    return true;
  }

  /** Sends what the learner says was wrong with a thumbs-down answer, as the rating's comment. */
  function comment(id, text) {
    const entry = S.byClientId.get(id);
    if (!entry || !canRate(entry)) return false;
    const fb = entry.feedback;
    const message = String(text ?? '').trim();
    if (fb.sending || fb.rating !== 'down' || !message) return false;
    if (charCount(message) > COMMENT_MAX_CHARS) {
      Object.assign(fb, {
        note: t('commentTooLong', { count: charCount(message), max: COMMENT_MAX_CHARS }),
        error: true,
      });
      renderFeedback(entry);
      return false;
    }
    const frame = { type: 'feedback', message_id: entry.reply.messageId, rating: 'down', comment: message };
    if (!S.ready || !sendFrame(frame)) {
      Object.assign(fb, { note: t('notConnected'), error: true });
      renderFeedback(entry);
      return false;
    }
    Object.assign(fb, { sending: 'down', note: t('sending'), error: false });
    S.requests.push({ kind: 'feedback', entry, rating: 'down', comment: message });
    renderFeedback(entry);
    return true;
  }

  /** Asks for the learner's mentor, with `text` (default: what is typed in the box) if any. */
  function askMentor(text) {
    const typed = text === undefined ? ui.input.value : String(text ?? '');
    const message = typed.trim();
    if (charCount(message) > MAX_CHARS) {
      notice(t('messageTooLong', { count: charCount(message), max: MAX_CHARS }), { code: 'question_too_long' });
      return false;
    }
    if (S.requests.some((r) => r.kind === 'mentor')) return false;
    const frame = { type: 'request_mentor' };
    if (message) frame.text = message;
    if (!S.ready || !sendFrame(frame)) {
      notice(t('mentorNotConnected'), { code: 'mentor_request' });
      return false;
    }
    const request = {
      kind: 'mentor',
      text: message,
      status: 'pending',
      flagId: null,
      error: null,
      el: notice(withQuote(t('askingMentor'), message), { code: 'mentor_request', kind: 'info mentor' }),
    };
    S.requests.push(request);
    S.mentorRequests.push(request);
    updateControls();
    return true;
  }

  function withQuote(sentence, text) {
    if (!text) return `${sentence}…`;
    const chars = Array.from(text);
    const quote = chars.length > QUOTE_MAX_CHARS ? `${chars.slice(0, QUOTE_MAX_CHARS).join('')}…` : text;
    return `${sentence}: “${quote}”`;
  }

  function onFeedbackSaved(frame) {
    const request = S.requests.find(
      (r) => r.kind === 'feedback' && r.entry.reply.messageId === frame.message_id,
    );
    if (request) settleRequest(request, null, frame);
  }

  function onMentorRequested(frame) {
    const request = S.requests.find((r) => r.kind === 'mentor');
    if (request) settleRequest(request, null, frame);
  }

  /** The server answered a request: `error` ({code, message}) or its reply `frame`. */
  function settleRequest(request, error, frame) {
    const index = S.requests.indexOf(request);
    if (index >= 0) S.requests.splice(index, 1);
    if (request.kind === 'feedback') {
      const { entry } = request;
      const fb = entry.feedback;
      fb.sending = null;
      if (error) {
        Object.assign(fb, { note: t('notSaved', { message: error.message }), error: true });
      } else if (request.comment) {
        Object.assign(fb, { comment: request.comment, note: t('commentSent'), error: false });
      } else {
        const rating = ['up', 'down'].includes(frame.rating) ? frame.rating : request.rating;
        Object.assign(fb, {
          rating,
          note: t(rating === 'up' ? 'savedUp' : 'savedDown'),
          error: false,
          askComment: rating === 'down',
          comment: null,
        });
      }
      renderFeedback(entry);
      return;
    }
    const el = request.el;
    if (error) {
      request.status = 'failed';
      request.error = error;
      el.className = 'notice error mentor';
      el.setAttribute('role', 'alert');
      el.dataset.code = error.code;
      el.textContent = t('mentorNotAsked', { message: error.message });
    } else {
      request.status = 'sent';
      request.flagId = str(frame.flag_id) || null;
      el.dataset.flagId = request.flagId || '';
      el.textContent = request.text
        ? withQuote(t('mentorWillSee'), request.text)
        : t('mentorWillSeeRequest');
      // The typed text went to the mentor: clear it, unless the learner has changed it since.
      if (request.text && ui.input.value.trim() === request.text) {
        ui.input.value = '';
        autosize();
      }
    }
    updateControls();
  }

  /** The socket went away: requests it carried will get no answer. */
  function dropRequests() {
    for (const request of [...S.requests]) {
      const message = request.kind === 'feedback' ? t('dropped') : t('droppedMentor');
      settleRequest(request, { code: 'connection_lost', message });
    }
  }

  // ---------------------------------------------------------------- attachments

  /** Sends a pasted snippet; it goes with the next question (`attach` without a name). */
  function attach(text) {
    const content = String(text ?? '');
    if (!content.trim() || !S.ready) return false;
    const id = newClientId();
    if (!sendFrame({ type: 'attach', id, content })) return false;
    S.attachments.push({ id, status: 'sending', el: null });
    return true;
  }

  function onAttached(frame) {
    const item = S.attachments.find((a) => a.id === frame.id);
    if (!item) return;
    item.status = 'attached';
    item.el = notice(t('attached', { name: str(frame.name) || t('snippet') }), { kind: 'info attached', code: 'attached' });
  }

  function clearAttachments() {
    S.attachments = S.attachments.filter((a) => a.status === 'sending');
  }

  // ---------------------------------------------------------------- history

  /** Reads the conversation in use back from the server (oldest first), once per page. */
  async function restoreHistory() {
    if (!S.conversationId || !S.token) return;
    const messages = [];
    const ratings = new Map(); // answer id -> the learner's stored rating and comment
    let cursor = null;
    try {
      for (let page = 0; page < HISTORY_MAX_PAGES; page += 1) {
        const query = `limit=${HISTORY_PAGE}${cursor ? `&after=${encodeURIComponent(cursor)}` : ''}`;
        const view = await api(`/api/v1/conversations/${encodeURIComponent(S.conversationId)}?${query}`);
        messages.push(...(Array.isArray(view.messages) ? view.messages : []));
        for (const f of Array.isArray(view.feedback) ? view.feedback : []) {
          if (f && (f.rating === 'up' || f.rating === 'down')) ratings.set(str(f.message_id), f);
        }
        cursor = view.next_cursor;
        if (!cursor) break;
      }
    } catch (error) {
      if (error.status !== 404) notice(t('historyFailed', { message: error.message }), { kind: 'info', code: 'history' });
      return;
    }
    showMessages(messages, ratings);
  }

  /**
   * Stored messages as entries above anything typed since, with the thumbs the learner gave;
   * unanswered recent ones asked again.
   */
  function showMessages(messages, ratings = new Map()) {
    const answers = new Map();
    for (const m of messages) if (m.role !== 'learner' && m.reply_to && !answers.has(m.reply_to)) answers.set(m.reply_to, m);
    const fragment = document.createDocumentFragment();
    const restored = [];
    const resume = [];
    for (const m of messages) {
      if (m.role !== 'learner') continue;
      const id = str(m.client_id) || m.id;
      if (S.byClientId.has(id)) continue;
      const entry = newEntry({ id, text: str(m.text), messageId: m.id, createdAt: m.created_at, restored: true });
      const answer = answers.get(m.id);
      if (answer) {
        Object.assign(entry.reply, {
          text: str(answer.text),
          status: str(answer.status) || 'complete',
          sources: readSources(answer.sources),
          offline: Boolean(answer.offline),
          model: answer.model || null,
          messageId: answer.id,
        });
        const rated = ratings.get(answer.id);
        if (rated) {
          entry.feedback.rating = rated.rating;
          entry.feedback.comment = typeof rated.comment === 'string' ? rated.comment : null;
        }
      }
      entry.acked = true;
      const open = !answer || answer.status === 'streaming';
      if (open && Date.now() - entry.createdAt < RESUME_MAX_AGE_MS && m.client_id) {
        // Still being written (or orphaned): resumed from its first delta, which replaces
        // the stored partial text.
        entry.resume = true;
        entry.reply.stale = entry.reply.text.length > 0;
        entry.acked = false;
        entry.page = { url: str(m.page_url) || page.url, title: page.title };
        entry.course = page.course || null;
        resume.push(entry);
      } else {
        entry.finished = true;
        if (open) entry.reply.status = 'interrupted';
      }
      restored.push(entry);
      S.byClientId.set(entry.id, entry);
      renderEntry(entry, fragment);
    }
    S.entries = restored.concat(S.entries);
    S.outbox = resume.concat(S.outbox);
    ui.messages.prepend(fragment);
    for (const entry of S.outbox) renderMeta(entry);
    scrollToEnd(true);
  }

  function newConversation() {
    for (const entry of [...S.outbox]) if (!entry.sent) finish(entry, 'cancelled');
    S.entries = [];
    S.byClientId.clear();
    ui.messages.textContent = '';
    S.modelOffline = false;
    delete root.dataset.model;
    rememberConversation(newClientId());
    S.restored = true;
    reconnectForConversation('new conversation');
  }

  // ---------------------------------------------------------------- controls

  function updateControls() {
    const text = ui.input.value;
    const length = charCount(text);
    const signedOut = S.connection === 'signin';
    ui.counter.textContent = `${length} / ${MAX_CHARS}`;
    ui.counter.classList.toggle('near', length >= MAX_CHARS * 0.9);
    ui.counter.classList.toggle('over', length > MAX_CHARS);
    ui.input.disabled = signedOut;
    ui.send.disabled = signedOut || !text.trim() || length > MAX_CHARS;
    const active = S.outbox[0];
    ui.stop.hidden = !active;
    ui.stop.disabled = Boolean(active && active.cancelRequested);
    ui.stop.textContent = active && active.cancelRequested ? t('stopping') : t('stop');
    root.classList.toggle('busy', Boolean(active));
    const asking = S.requests.some((r) => r.kind === 'mentor');
    ui.mentor.disabled = !S.ready || asking;
    ui.mentor.textContent = asking ? t('asking') : t('mentor');
    ui.attach.disabled = !S.ready;
  }

  function autosize() {
    ui.input.style.height = 'auto';
    ui.input.style.height = `${Math.min(ui.input.scrollHeight + 2, 220)}px`;
  }

  function submit() {
    if (ui.send.disabled) return;
    if (send(ui.input.value)) {
      ui.input.value = '';
      autosize();
      updateControls();
    }
  }

  function setPanelOpen(open) {
    if (!launcher) return;
    root.classList.toggle('open', open);
    launcher.setAttribute('aria-expanded', String(open));
    launcher.classList.remove('unread');
    if (open) ui.input.focus();
    else launcher.focus();
  }

  function setHistoryOpen(open) {
    if (open) setPrivacyOpen(false);
    ui.historyPanel.hidden = !open;
    ui.history.setAttribute('aria-expanded', String(open));
    root.classList.toggle('side-open', open || !ui.privacyPanel.hidden);
    if (open) {
      ui.historyPanel.focus();
      listConversations(true);
    }
  }

  function setPrivacyOpen(open) {
    if (open) setHistoryOpen(false);
    ui.privacyPanel.hidden = !open;
    ui.privacy.setAttribute('aria-expanded', String(open));
    root.classList.toggle('side-open', open || !ui.historyPanel.hidden);
    if (open) {
      ui.privacyPanel.focus();
      showTransparency();
    }
  }

  /** Who can read the conversation, what the companion knows, retention, and the download. */
  async function showTransparency() {
    const body = ui.privacyBody;
    body.textContent = t('loading');
    let info;
    try {
      info = await api('/api/v1/me/transparency');
    } catch (error) {
      body.textContent = t('historyFailed', { message: error.message });
      return;
    }
    const readers = [
      info.readers.mentor ? t('readerMentor', { name: str(info.readers.mentor_name) || info.readers.mentor }) : t('readerNoMentor'),
      info.readers.course ? t('readerCourse', { course: info.readers.course }) : null,
      info.readers.admins ? t('readerAdmins') : null,
    ].filter(Boolean);
    const knows = info.knows;
    const known = [
      knows.profile ? t('knowsProfile') : t('knowsNoProfile'),
      t('knowsFiles', { count: knows.project_files }),
      knows.mentor_goals.length ? t('knowsGoals', { goals: knows.mentor_goals.join(' · ') }) : t('knowsNoGoals'),
    ];
    const list = (items, name) => h('ul', { class: 'facts', 'data-facts': name }, ...items.map((item) => h('li', {}, item)));
    const download = h('button', { type: 'button', class: 'btn btn-primary', id: 'download' }, t('download'));
    download.addEventListener('click', () => downloadHistory(info.export_url, download));
    body.textContent = '';
    body.append(
      h('h4', {}, t('readersTitle')), list(readers, 'readers'),
      h('h4', {}, t('knowsTitle')), list(known, 'knows'),
      h('h4', {}, t('retentionTitle')),
      h('p', { 'data-retention': info.retention_days ?? 'forever' },
        info.retention_days ? t('retentionDays', { days: info.retention_days }) : t('retentionForever')),
      download,
    );
  }

  /** The export (JSON) fetched with the token, saved as a file. */
  async function downloadHistory(path, button) {
    try {
      const response = await fetch(`${server}${path}`, { headers: { Authorization: `Bearer ${S.token}` } });
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      const url = URL.createObjectURL(await response.blob());
      const link = h('a', { href: url, download: 'companion-history.json', hidden: true });
      shadow.append(link);
      link.click();
      link.remove();
      setTimeout(() => URL.revokeObjectURL(url), 10000);
    } catch (error) {
      button.after(h('p', { class: 'notice error', role: 'alert' }, t('downloadFailed', { message: error.message })));
    }
  }

  async function listConversations(fresh) {
    if (!S.token) return;
    if (fresh) {
      ui.conversations.textContent = '';
      S.conversationsCursor = null;
    }
    const loading = h('li', { class: 'loading' }, t('loading'));
    ui.conversations.append(loading);
    let view;
    try {
      const query = `limit=20${S.conversationsCursor ? `&after=${encodeURIComponent(S.conversationsCursor)}` : ''}`;
      view = await api(`/api/v1/me/conversations?${query}`);
    } catch (error) {
      loading.textContent = t('historyFailed', { message: error.message });
      return;
    }
    loading.remove();
    const list = Array.isArray(view.conversations) ? view.conversations : [];
    if (fresh && !list.length) ui.conversations.append(h('li', { class: 'empty' }, t('noConversations')));
    for (const c of list) {
      const date = new Date(c.updated_at).toLocaleString(S.lang);
      const label = str(c.first_question) || t('conversationFrom', { date });
      const current = c.id === S.conversationId;
      const button = h('button', { type: 'button', class: 'conversation', 'data-conversation-id': c.id, 'aria-current': current ? 'true' : null },
        h('span', { class: 'conversation-title' }, label),
        h('span', { class: 'conversation-date' }, current ? `${date} ${t('current')}` : date));
      button.addEventListener('click', () => openConversation(c.id));
      ui.conversations.append(h('li', {}, button));
    }
    S.conversationsCursor = view.next_cursor || null;
    ui.moreConversations.hidden = !S.conversationsCursor;
  }

  // After the conversation shown changed: the server learns its id on the next connection, so
  // the socket is closed and opened again at once; the list closes, the question box is focused.
  function reconnectForConversation(reason) {
    if (S.ws) {
      const ws = S.ws;
      socketLost(ws, true);
      try { ws.close(1000, reason); } catch { /* already closed */ }
    }
    S.attempt = 0;
    clearTimeout(S.reconnectTimer);
    S.reconnectTimer = null;
    connect();
    setHistoryOpen(false);
    ui.input.focus();
  }

  function openConversation(id) {
    if (id === S.conversationId) {
      setHistoryOpen(false);
      return;
    }
    S.entries = [];
    S.byClientId.clear();
    S.outbox = S.outbox.filter((e) => e.sent);
    ui.messages.textContent = '';
    rememberConversation(id, true);
    S.restored = false;
    reconnectForConversation('other conversation');
  }

  async function copyCode(button) {
    const code = button.closest('.code-block')?.querySelector('pre');
    if (!code) return;
    try {
      await navigator.clipboard.writeText(code.textContent);
      button.textContent = t('copied');
    } catch {
      const range = document.createRange();
      range.selectNodeContents(code);
      const selection = shadow.getSelection ? shadow.getSelection() : window.getSelection();
      selection.removeAllRanges();
      selection.addRange(range);
    }
    setTimeout(() => { button.textContent = t('copy'); }, 2000);
  }

  function wireControls() {
    ui.form.addEventListener('submit', (event) => {
      event.preventDefault();
      submit();
    });
    ui.input.addEventListener('keydown', (event) => {
      // Enter sends, Shift+Enter is a new line; Enter that confirms an IME composition is not.
      if (event.key !== 'Enter' || event.shiftKey || event.isComposing || event.keyCode === 229) return;
      event.preventDefault();
      submit();
    });
    ui.input.addEventListener('input', () => {
      autosize();
      updateControls();
    });
    ui.stop.addEventListener('click', stop);
    ui.mentor.addEventListener('click', () => askMentor());
    ui.history.addEventListener('click', () => setHistoryOpen(ui.historyPanel.hidden));
    ui.privacy.addEventListener('click', () => setPrivacyOpen(ui.privacyPanel.hidden));
    ui.newConversation.addEventListener('click', newConversation);
    ui.moreConversations.addEventListener('click', () => listConversations(false));
    ui.attach.addEventListener('click', () => {
      const open = ui.attachForm.hidden;
      ui.attachForm.hidden = !open;
      ui.attach.setAttribute('aria-expanded', String(open));
      if (open) ui.attachText.focus();
    });
    ui.attachForm.addEventListener('submit', (event) => {
      event.preventDefault();
      if (attach(ui.attachText.value)) {
        ui.attachText.value = '';
        ui.attachForm.hidden = true;
        ui.attach.setAttribute('aria-expanded', 'false');
        ui.input.focus();
      }
    });
    ui.messages.addEventListener('click', (event) => {
      const button = event.target.closest && event.target.closest('button[data-copy]');
      if (button) copyCode(button);
    });
    if (launcher) launcher.addEventListener('click', () => setPanelOpen(!root.classList.contains('open')));
    if (ui.close) ui.close.addEventListener('click', () => setPanelOpen(false));
    root.addEventListener('keydown', (event) => {
      if (event.key !== 'Escape') return;
      if (!ui.historyPanel.hidden) {
        setHistoryOpen(false);
        ui.history.focus();
      } else if (!ui.privacyPanel.hidden) {
        setPrivacyOpen(false);
        ui.privacy.focus();
      } else if (launcher && root.classList.contains('open')) {
        setPanelOpen(false);
      }
    });
    window.addEventListener('online', () => {
      setConnection(S.connection);
      if (S.reconnectTimer) connect();
    });
    window.addEventListener('offline', () => setConnection(S.connection));
    window.addEventListener('pagehide', () => {
      S.closing = true;
      clearTimeout(S.reconnectTimer);
      S.reconnectTimer = null;
      if (S.ws) {
        try { S.ws.close(1000, 'page closed'); } catch { /* already closed */ }
      }
    });
    window.addEventListener('pageshow', (event) => {
      if (!event.persisted) return;
      // Back from the back/forward cache: the old socket is gone.
      S.closing = false;
      if (S.ws) {
        const ws = S.ws;
        S.ws = null;
        S.ready = false;
        stopPing();
        requeueActiveAsk();
        try { ws.close(); } catch { /* already closed */ }
      }
      connect();
    });
  }

  function state() {
    const snapshot = {
      connection: S.connection,
      ready: S.ready,
      protocol: S.protocol,
      lang: S.lang,
      renderer: S.renderer.markdown ? 'markdown' : 'plain',
      conversationId: S.conversationId,
      learner: S.learner,
      streaming: S.outbox.length > 0,
      activeId: S.outbox[0] ? S.outbox[0].id : null,
      queued: Math.max(0, S.outbox.length - 1),
      reconnectAttempt: S.attempt,
      messages: S.entries.flatMap((e) => [
        { role: 'learner', id: e.id, text: e.text, messageId: e.messageId, acked: e.acked, duplicate: e.duplicate },
        {
          role: 'assistant',
          id: e.id,
          text: e.reply.text,
          status: e.reply.status,
          sources: e.reply.sources,
          offline: e.reply.offline,
          replayed: e.reply.replayed,
          model: e.reply.model,
          messageId: e.reply.messageId,
          usage: e.reply.usage,
          timings: e.reply.timings,
          error: e.reply.error,
          feedback: e.feedback.rating,
          feedbackComment: e.feedback.comment,
        },
      ]),
      mentorRequests: S.mentorRequests.map((r) => ({
        text: r.text, status: r.status, flagId: r.flagId, error: r.error,
      })),
      errors: S.errors,
    };
    return JSON.parse(JSON.stringify(snapshot)); // a copy: tests cannot change the panel
  }

  applyLanguage();
  wireControls();
  updateControls();
  loadLibs(server).then((libs) => {
    if (!libs) return;
    S.renderer = createRenderer(libs, server, (key) => t(key));
    rerenderAll();
    host.dataset.renderer = 'markdown';
  });
  connect();
  return { send, stop, rate, comment, askMentor, attach, newConversation, state };
}

class CompanionChatElement extends HTMLElement {
  connectedCallback() {
    if (this.companion) return;
    const shadow = this.attachShadow({ mode: 'open' });
    const server = (this.getAttribute('server') || SCRIPT_ORIGIN || location.origin).replace(/\/+$/, '');
    this.companion = createChat(this, shadow, server);
  }
}

if (!customElements.get('companion-chat')) customElements.define('companion-chat', CompanionChatElement);
