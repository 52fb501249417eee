/*
 * Companion chat panel: vanilla JavaScript (ES2020), no framework, no build step.
 * Speaks the WebSocket protocol v1 described in docs/protocol.md.
 *
 * Model: every question is an "entry" (the learner's ask plus the assistant's reply), keyed by
 * its client id. Entries not finished yet wait in `outbox`, oldest first; only the first one is
 * on the wire, because the server streams one answer per connection. When the socket drops,
 * that first ask is sent again with the same id after reconnecting: the server de-duplicates
 * by id and replays the stored answer (or waits for the one still being written).
 *
 * Under each finished answer, thumbs up / down send `feedback` with the answer's message id; once
 * a thumbs-down is saved, a small box offers to say what was wrong (sent as the rating's
 * `comment`, which replaces the stored rating with the same one plus the comment). The
 * header's "Ask my mentor" sends `request_mentor` with what is typed in the box, if anything.
 * The server answers these in order and its errors about them carry no id, so they wait in
 * `requests`, oldest first, and each reply (or id-less error) settles the oldest.
 *
 * Test hooks: window.companionChat = { send(text), stop(), rate(id, rating), comment(id, text),
 * askMentor(text), state() }.
 */
(() => {
  'use strict';

  const MAX_CHARS = 4000;
  const BACKOFF_MS = [1000, 2000, 5000, 10000];
  const PING_EVERY_MS = 25000;
  const PONG_TIMEOUT_MS = 10000;
  // `busy` can race the end of the previous answer; such asks were not stored, so resend.
  const BUSY_RETRY_MS = 400;
  const BUSY_RETRIES = 5;
  // An unfinished ask found in the saved transcript is sent again only if it is this recent.
  const RESUME_MAX_AGE_MS = 10 * 60 * 1000;
  const TRANSCRIPT_MAX_ENTRIES = 30;
  const NO_CONVERSATION = '00000000-0000-0000-0000-000000000000';
  const KEY = {
    token: 'companion.token',
    tokenSubject: 'companion.token_subject',
    conversation: 'companion.conversation',
    transcript: 'companion.transcript',
  };
  const SIGN_IN_TEXT = 'Sign in through your course platform to chat';
  const CONNECTION_TEXT = {
    connecting: 'Connecting…',
    open: 'Connecting…',
    ready: 'Connected',
    reconnecting: 'Reconnecting…',
    signin: SIGN_IN_TEXT,
  };
  const DONE_TEXT = {
    complete: '',
    cancelled: '(stopped)',
    interrupted: '(interrupted)',
    failed: '(failed)',
  };
  // Error codes after which the server still sends `done` for the same ask.
  const CODES_FOLLOWED_BY_DONE = new Set(['llm_unavailable', 'llm_timeout', 'answer_too_long']);
  const RATING = {
    up: { label: 'Helpful answer', saved: 'Thanks!' },
    down: { label: 'Not helpful', saved: 'Noted, thanks. Still stuck? Ask your mentor.' },
  };
  // The server's limit on a rating's comment (docs/protocol.md, `feedback`).
  const COMMENT_MAX_CHARS = 2000;
  // Feather icons (MIT): thumbs-up and thumbs-down.
  const THUMB_PATH = {
    up: 'M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 1-2-2v-7a2 2 0 0 1 2-2h3',
    down: 'M10 15v4a3 3 0 0 0 3 3l4-9V2H5.72a2 2 0 0 0-2 1.7l-1.38 9a2 2 0 0 0 2 2.3zm7-13h2.67A2.31 2.31 0 0 1 22 4v7a2.31 2.31 0 0 1-2.33 2H17',
  };
  // How much of a mentor request's text its notice quotes.
  const QUOTE_MAX_CHARS = 160;

  const root = document.getElementById('companion-chat');
  if (!root) return;
  const byId = (id) => document.getElementById(id);
  const ui = {
    messages: byId('companion-messages'),
    form: byId('companion-form'),
    input: byId('companion-input'),
    send: byId('companion-send'),
    stop: byId('companion-stop'),
    status: byId('companion-status'),
    counter: byId('companion-counter'),
    toggle: byId('companion-toggle'),
    close: byId('companion-close'),
    mentor: byId('companion-mentor'),
  };
  if (!ui.messages || !ui.input || !ui.send || !ui.stop || !ui.status) {
    console.error('[companion] chat panel markup is incomplete; see web/page.html');
    return;
  }

  // A placeholder the server did not fill reads as empty.
  const filled = (value) => (value && !/^\{\{\w+\}\}$/.test(value) ? value : '');
  const page = {
    course: filled(root.dataset.course),
    url: filled(root.dataset.pageUrl) || location.pathname,
    title: filled(root.dataset.pageTitle) || document.title,
  };

  const store = {
    get(key) {
      try { return sessionStorage.getItem(key); } catch { return null; }
    },
    set(key, value) {
      try { sessionStorage.setItem(key, value); } catch { /* storage full or disabled */ }
    },
    remove(key) {
      try { sessionStorage.removeItem(key); } catch { /* storage disabled */ }
    },
  };

  const S = {
    connection: 'idle',
    ws: null,
    connecting: false,
    closing: false,
    ready: false,
    protocol: null,
    learner: null,
    token: null,
    conversationId: store.get(KEY.conversation),
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
  };

  // ---------------------------------------------------------------- small helpers

  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === 'class') el.className = value;
      else el.setAttribute(name, value === true ? '' : String(value));
    }
    // append() turns strings into text nodes: nothing here is parsed as HTML.
    for (const child of children) if (child !== null && child !== undefined) el.append(child);
    return el;
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

  /** A link target that is http(s) (or relative to this page), else null. */
  function safeLink(url) {
    if (!url) return null;
    try {
      const parsed = new URL(url, location.href);
      if (parsed.protocol !== 'http:' && parsed.protocol !== 'https:') return null;
      return { href: url, external: parsed.origin !== location.origin };
    } catch {
      return null;
    }
  }

  // ---------------------------------------------------------------- token and conversation

  function setToken(token) {
    const subject = jwtClaims(token)?.sub ?? null;
    const previous = store.get(KEY.tokenSubject);
    // Another learner's token: their conversation is not ours to resume.
    if (subject && previous && subject !== previous) forgetConversation();
    if (subject) store.set(KEY.tokenSubject, subject);
    S.token = token;
    store.set(KEY.token, token);
  }

  function dropToken() {
    S.token = null;
    store.remove(KEY.token);
  }

  function forgetConversation() {
    S.conversationId = null;
    store.remove(KEY.conversation);
  }

  /** `?token=` wins; it is kept for this tab and removed from the address bar. */
  function takeTokenFromUrl() {
    let url;
    try { url = new URL(location.href); } catch { return; }
    const token = url.searchParams.get('token');
    if (!token) return;
    setToken(token);
    url.searchParams.delete('token');
    try {
      history.replaceState(history.state, '', url.pathname + url.search + url.hash);
    } catch { /* not allowed here; harmless */ }
  }

  /** The token to connect with; null when the demo is off and none was given. */
  async function ensureToken() {
    if (S.token) return S.token;
    const stored = store.get(KEY.token);
    if (stored) {
      S.token = stored;
      return stored;
    }
    const response = await fetch('/api/v1/demo/token', {
      method: 'POST',
      headers: { Accept: 'application/json' },
      credentials: 'same-origin',
    });
    if (response.status === 404) return null;
    if (!response.ok) throw new Error(`demo token: HTTP ${response.status}`);
    const body = await response.json();
    if (!body || typeof body.token !== 'string' || !body.token) {
      throw new Error('demo token: no token in the response');
    }
    setToken(body.token);
    return body.token;
  }

  /*
   * A refused upgrade (401 token, 404 foreign conversation, 503 still starting) looks to a
   * browser like any failed connection. After two failures in a row, ask the REST API with
   * the same token which of them it is.
   */
  async function diagnoseRefusedUpgrade() {
    S.failedBeforeOpen += 1;
    if (S.token && tokenExpired(S.token)) {
      dropToken();
      return;
    }
    if (S.failedBeforeOpen < 2 || !S.token) return;
    let status;
    try {
      const conversation = encodeURIComponent(S.conversationId || NO_CONVERSATION);
      const response = await fetch(`/api/v1/conversations/${conversation}`, {
        headers: { Authorization: `Bearer ${S.token}`, Accept: 'application/json' },
        credentials: 'same-origin',
        cache: 'no-store',
      });
      status = response.status;
    } catch {
      return; // the server is unreachable: keep everything and keep retrying
    }
    if (status === 401) dropToken();
    else if ((status === 404 || status === 400) && S.usedConversation) forgetConversation();
  }

  // ---------------------------------------------------------------- connection

  function setConnection(state, text) {
    S.connection = state;
    ui.status.dataset.state = state;
    ui.status.textContent = text || CONNECTION_TEXT[state] || '';
    ui.status.title = state === 'ready' && S.learner ? `Signed in as ${S.learner.name}` : '';
    root.dataset.connection = state;
    for (const entry of S.outbox) renderMeta(entry);
    for (const entry of S.entries) if (entry.dom && entry.dom.feedback) renderFeedback(entry);
    updateControls();
  }

  function socketUrl(token) {
    const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
    let url = `${scheme}//${location.host}/ws?token=${encodeURIComponent(token)}`;
    if (S.conversationId) url += `&conversation=${encodeURIComponent(S.conversationId)}`;
    return url;
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
    setConnection('reconnecting', `Disconnected — reconnecting in ${Math.round(delay / 1000)} s…`);
    S.reconnectTimer = setTimeout(connect, delay);
  }

  function enterSignIn() {
    setConnection('signin');
    ui.input.placeholder = SIGN_IN_TEXT;
    if (!ui.messages.querySelector('.notice.signin')) {
      notice(SIGN_IN_TEXT, { kind: 'info signin', code: 'signin' });
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
        rating: RATING[fields.feedback] ? fields.feedback : null, // as the server stored it
        sending: null, // the rating on the wire, until the server answers
        note: '',
        error: false,
        askComment: false, // a thumbs-down was just saved: offer the comment box
        comment: null, // the comment the server stored
      },
      dom: null,
    };
  }

  function send(text) {
    const question = String(text ?? '').trim();
    if (!question) return null;
    const length = charCount(question);
    if (length > MAX_CHARS) {
      notice(`Your question has ${length} characters; the limit is ${MAX_CHARS}.`, {
        code: 'question_too_long',
      });
      return null;
    }
    if (S.connection === 'signin') {
      notice(SIGN_IN_TEXT, { kind: 'info signin', code: 'signin' });
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
    saveTranscript();
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
      const frame = { type: 'ask', id: entry.id, text: entry.text };
      if (entry.page) frame.page = entry.page;
      if (entry.course) frame.course = entry.course;
      if (sendFrame(frame)) {
        entry.sent = true;
        if (entry.cancelRequested) sendFrame({ type: 'cancel', id: entry.id });
        renderMeta(entry);
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

  /** The socket went away: the ask on the wire goes out again, same id, once reconnected. */
  function requeueActiveAsk() {
    const entry = S.outbox[0];
    if (!entry || !entry.sent || entry.finished) return;
    if (entry.cancelRequested) {
      finish(entry, 'cancelled');
      return;
    }
    entry.sent = false;
    entry.acked = false;
    const reply = entry.reply;
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
    if (!root.classList.contains('open') && ui.toggle && ui.toggle.offsetParent !== null) {
      ui.toggle.classList.add('unread');
    }
    pump();
    saveTranscript();
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
      case 'error': return onError(entry, frame);
      default: return undefined; // `pong`, and frame types from a later version
    }
  }

  function onReady(frame) {
    if (frame.protocol !== 1) {
      console.warn('[companion] server speaks protocol', frame.protocol, '; this page speaks 1');
    }
    S.ready = true;
    S.protocol = frame.protocol;
    S.learner = frame.learner || null;
    S.attempt = 0;
    S.failedBeforeOpen = 0;
    if (typeof frame.conversation_id === 'string' && frame.conversation_id) {
      S.conversationId = frame.conversation_id;
      store.set(KEY.conversation, frame.conversation_id);
    }
    if (!S.restored) {
      S.restored = true;
      restoreTranscript();
    }
    setConnection('ready');
    pump();
  }

  function onAck(entry, frame) {
    entry.acked = true;
    entry.duplicate = Boolean(frame.duplicate);
    entry.messageId = str(frame.message_id) || entry.messageId;
    if (entry.dom) entry.dom.learner.dataset.messageId = entry.messageId || '';
    renderMeta(entry);
    saveTranscript();
  }

  function onSources(entry, frame) {
    const list = Array.isArray(frame.sources) ? frame.sources : [];
    entry.reply.sources = list
      .filter((s) => s && typeof s === 'object')
      .map((s, i) => ({
        n: Number.isInteger(s.n) ? s.n : i + 1,
        title: str(s.title) || str(s.section) || str(s.url) || `Source ${i + 1}`,
        section: str(s.section),
        url: str(s.url),
        snippet: str(s.snippet),
      }));
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
    const status = str(frame.status) || 'complete';
    const follow = nearEnd();
    finish(entry, status);
    scrollToEnd(follow);
  }

  function onError(entry, frame) {
    const code = str(frame.code) || 'internal';
    const message = str(frame.message) || code.replace(/_/g, ' ');
    S.errors.push({ id: typeof frame.id === 'string' ? frame.id : null, code, message });
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
    notice(message, { code, id: entry.id });
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
    const el = h(
      'div',
      {
        class: `notice ${kind}`,
        role: kind === 'error' ? 'alert' : 'status',
        'data-code': code,
        'data-id': id,
        title: code,
      },
      message,
    );
    appendToLog(el);
    return el;
  }

  function renderEntry(entry, container = ui.messages) {
    const learner = h(
      'div',
      { class: 'msg learner', 'data-id': entry.id, 'data-message-id': entry.messageId },
      h('div', { class: 'msg-body' }, entry.text),
    );
    const body = h('div', { class: 'msg-body' });
    const sourcesLabel = h('p', { class: 'sources-label', hidden: true }, 'Sources');
    const sources = h('ol', { class: 'sources', hidden: true, 'aria-label': 'Sources' });
    const status = h('span', { class: 'status' });
    const meta = h('div', { class: 'msg-meta' }, status);
    const assistant = h(
      'div',
      { class: 'msg assistant', 'data-id': entry.id },
      body,
      sourcesLabel,
      sources,
      meta,
    );
    entry.dom = {
      learner,
      assistant,
      body,
      sourcesLabel,
      sources,
      meta,
      status,
      cursor: h('span', { class: 'cursor', 'aria-hidden': 'true' }),
      badge: null,
      retry: null,
      feedback: null,
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
    const { body, cursor } = entry.dom;
    body.textContent = '';
    appendTextWithCitations(body, entry.reply.text, entry.reply.sources);
    if (!entry.finished) body.append(cursor);
  }

  function renderSources(entry) {
    const { sources, sourcesLabel } = entry.dom;
    const list = entry.reply.sources;
    sources.textContent = '';
    sources.hidden = list.length === 0;
    sourcesLabel.hidden = list.length === 0;
    for (const source of list) {
      const link = safeLink(source.url);
      const title = link
        ? h(
          'a',
          {
            href: link.href,
            title: source.snippet || null,
            target: link.external ? '_blank' : null,
            rel: link.external ? 'noopener noreferrer' : null,
          },
          source.title,
        )
        : h('span', { class: 'source-title', title: source.snippet || null }, source.title);
      const section = source.section && source.section !== source.title
        ? h('span', { class: 'source-section' }, source.section)
        : null;
      sources.append(h('li', { value: source.n, 'data-n': source.n }, title, section));
    }
  }

  function statusText(entry) {
    const reply = entry.reply;
    if (entry.finished) {
      if (reply.status === 'complete' && !reply.text) return '(no answer)';
      return DONE_TEXT[reply.status] ?? `(${reply.status})`;
    }
    if (entry.cancelRequested) return 'Stopping…';
    if (!entry.sent) {
      if (S.outbox[0] !== entry) return 'Queued';
      return reply.stale ? 'Connection lost — resuming…' : 'Waiting for the connection…';
    }
    if (!entry.acked) return 'Sending…';
    if (reply.text && !reply.stale) return '';
    if (entry.duplicate) return 'Fetching the earlier answer…';
    return reply.sources.length ? 'Writing…' : 'Searching the course…';
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
      d.badge = h(
        'span',
        { class: 'badge offline', title: 'The AI model is not available: course passages and your files only' },
        'offline mode',
      );
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
      d.retry = h('button', { type: 'button', class: 'btn btn-small retry' }, 'Retry');
      d.retry.addEventListener('click', () => {
        d.retry.remove();
        send(entry.text);
      });
      d.meta.append(d.retry);
    }
    if (canRate(entry) && !d.feedback) {
      addRatingButtons(entry);
    }
    if (!entry.finished && !d.body.contains(d.cursor)) d.body.append(d.cursor);
    if (entry.finished) d.cursor.remove();
  }

  // ---------------------------------------------------------------- feedback and mentor

  /** Only a finished, stored answer (complete, offline ones included) can be rated. */
  function canRate(entry) {
    const reply = entry.reply;
    return entry.finished && reply.status === 'complete' && Boolean(reply.messageId && reply.text);
  }

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

  function addRatingButtons(entry) {
    const d = entry.dom;
    const button = (rating) => {
      const el = h('button', {
        type: 'button',
        class: `btn btn-rate ${rating}`,
        'aria-label': RATING[rating].label,
        title: RATING[rating].label,
        'aria-pressed': 'false',
        'data-rating': rating,
      }, thumbIcon(rating));
      el.addEventListener('click', () => rate(entry.id, rating));
      return el;
    };
    d.rateUp = button('up');
    d.rateDown = button('down');
    d.feedbackNote = h('span', { class: 'feedback-note' });
    d.feedback = h(
      'span',
      { class: 'feedback', role: 'group', 'aria-label': 'Rate this answer' },
      d.feedbackNote,
      d.rateUp,
      d.rateDown,
    );
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
        placeholder: 'What was wrong or missing? (optional)',
        'aria-label': 'What was wrong or missing in this answer',
      });
      const submit = h('button', { type: 'submit', class: 'btn btn-small' }, 'Send');
      const box = h('form', { class: 'feedback-comment' }, text, submit);
      box.addEventListener('submit', (event) => {
        event.preventDefault();
        comment(entry.id, text.value);
      });
      d.commentBox = box;
      d.commentText = text;
      d.commentSubmit = submit;
      d.meta.after(box);
    }
    const sending = fb.sending === 'down';
    d.commentText.disabled = sending;
    d.commentSubmit.disabled = !S.ready || sending;
  }

  /** Rates the answer to the ask with client id `id`; a new rating replaces the stored one. */
  function rate(id, rating) {
    const entry = S.byClientId.get(id);
    if (!entry || !RATING[rating] || !canRate(entry)) return false;
    const fb = entry.feedback;
    if (fb.sending || fb.rating === rating) return false;
    const frame = { type: 'feedback', message_id: entry.reply.messageId, rating };
    if (!S.ready || !sendFrame(frame)) {
      Object.assign(fb, { note: 'Not connected; try again in a moment.', error: true });
      renderFeedback(entry);
      return false;
    }
    Object.assign(fb, { sending: rating, note: 'Saving…', error: false });
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
        note: `Your comment has ${charCount(message)} characters; the limit is ${COMMENT_MAX_CHARS}.`,
        error: true,
      });
      renderFeedback(entry);
      return false;
    }
    const frame = {
      type: 'feedback', message_id: entry.reply.messageId, rating: 'down', comment: message,
    };
    if (!S.ready || !sendFrame(frame)) {
      Object.assign(fb, { note: 'Not connected; try again in a moment.', error: true });
      renderFeedback(entry);
      return false;
    }
    Object.assign(fb, { sending: 'down', note: 'Sending…', error: false });
    S.requests.push({ kind: 'feedback', entry, rating: 'down', comment: message });
    renderFeedback(entry);
    return true;
  }

  /** Asks for the learner's mentor, with `text` (default: what is typed in the box) if any. */
  function askMentor(text) {
    const typed = text === undefined ? ui.input.value : String(text ?? '');
    const message = typed.trim();
    if (charCount(message) > MAX_CHARS) {
      notice(`Your message has ${charCount(message)} characters; the limit is ${MAX_CHARS}.`, {
        code: 'question_too_long',
      });
      return false;
    }
    if (S.requests.some((r) => r.kind === 'mentor')) return false;
    const frame = { type: 'request_mentor' };
    if (message) frame.text = message;
    if (!S.ready || !sendFrame(frame)) {
      notice('Not connected, so your mentor was not asked; try again in a moment.', {
        code: 'mentor_request',
      });
      return false;
    }
    const request = {
      kind: 'mentor',
      text: message,
      status: 'pending',
      flagId: null,
      error: null,
      el: notice(withQuote('Asking your mentor', message), {
        code: 'mentor_request',
        kind: 'info mentor',
      }),
    };
    S.requests.push(request);
    S.mentorRequests.push(request);
    updateControls();
    return true;
  }

  function withQuote(sentence, text) {
    if (!text) return `${sentence}…`;
    const chars = Array.from(text);
    const quote = chars.length > QUOTE_MAX_CHARS
      ? `${chars.slice(0, QUOTE_MAX_CHARS).join('')}…`
      : text;
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
        Object.assign(fb, { note: `Not saved: ${error.message}`, error: true });
      } else if (request.comment) {
        Object.assign(fb, {
          comment: request.comment,
          note: 'Thanks, your comment was sent.',
          error: false,
        });
      } else {
        const rating = RATING[frame.rating] ? frame.rating : request.rating;
        Object.assign(fb, {
          rating,
          note: RATING[rating].saved,
          error: false,
          askComment: rating === 'down',
          comment: null,
        });
        saveTranscript();
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
      el.textContent = `Your mentor was not asked: ${error.message}`;
    } else {
      request.status = 'sent';
      request.flagId = str(frame.flag_id) || null;
      el.dataset.flagId = request.flagId || '';
      el.textContent = request.text
        ? withQuote('Your mentor will see this on their page', request.text)
        : 'Your mentor will see your request on their page.';
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
      const message = request.kind === 'feedback'
        ? 'the connection dropped before it was confirmed; try again'
        : 'the connection dropped before the request was confirmed; try again';
      settleRequest(request, { code: 'connection_lost', message });
    }
  }

  /*
   * Answer text goes in as text nodes. Citation markers such as [2] or [1, 3] whose numbers
   * all match a source become links to it. Markers that look like Python stay text: inside
   * `code` or ``` fences, or glued to a name or a call, as in items[1], f()[1] or grid[0][1].
   */
  const CITATION = /\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]/g;

  function appendTextWithCitations(container, text, sources) {
    if (!text) return;
    const byNumber = new Map(sources.map((s) => [s.n, s]));
    if (!byNumber.size || !text.includes('[')) {
      container.append(text);
      return;
    }
    const code = codeRanges(text);
    let last = 0;
    let lastCitationEnd = -1;
    for (const match of text.matchAll(CITATION)) {
      const parts = match[1].split(/(\s*,\s*)/); // numbers at even indexes, separators between
      const numbers = parts.filter((_, i) => i % 2 === 0).map(Number);
      const before = text[match.index - 1] || ' ';
      const indexing = /[\w)]/.test(before) || (before === ']' && lastCitationEnd !== match.index);
      if (indexing || insideAny(code, match.index) || !numbers.every((n) => byNumber.has(n))) {
        continue;
      }
      container.append(text.slice(last, match.index));
      if (numbers.length === 1) {
        container.append(citationLink(byNumber.get(numbers[0]), match[0]));
      } else {
        container.append('[');
        parts.forEach((part, i) => {
          container.append(i % 2 === 0 ? citationLink(byNumber.get(Number(part)), part) : part);
        });
        container.append(']');
      }
      last = match.index + match[0].length;
      lastCitationEnd = last;
    }
    container.append(text.slice(last));
  }

  function citationLink(source, label) {
    const link = safeLink(source.url);
    const title = source.section ? `${source.title} — ${source.section}` : source.title;
    if (!link) return h('span', { class: 'cite', title }, label);
    return h(
      'a',
      {
        class: 'cite',
        href: link.href,
        title,
        target: link.external ? '_blank' : null,
        rel: link.external ? 'noopener noreferrer' : null,
      },
      label,
    );
  }

  function codeRanges(text) {
    const ranges = [];
    for (const m of text.matchAll(/```[\s\S]*?(?:```|$)/g)) {
      ranges.push([m.index, m.index + m[0].length]);
    }
    for (const m of text.matchAll(/`[^`\n]+`/g)) {
      if (!insideAny(ranges, m.index)) ranges.push([m.index, m.index + m[0].length]);
    }
    return ranges;
  }

  const insideAny = (ranges, at) => ranges.some(([start, end]) => at >= start && at < end);

  // ---------------------------------------------------------------- transcript across pages

  /*
   * The panel is rebuilt on every page load; this tab's transcript is kept in sessionStorage
   * under the conversation id, so the chat carries over as the learner moves between pages.
   */
  function saveTranscript() {
    // Before the first `ready` the saved transcript is not restored yet: do not overwrite it.
    if (!S.conversationId || !S.restored) return;
    const entries = S.entries.slice(-TRANSCRIPT_MAX_ENTRIES).map((e) => ({
      id: e.id,
      text: e.text,
      page: e.page,
      course: e.course,
      createdAt: e.createdAt,
      messageId: e.messageId,
      finished: e.finished,
      cancelRequested: e.cancelRequested,
      reply: {
        text: e.reply.text,
        status: e.reply.status,
        sources: e.reply.sources,
        offline: e.reply.offline,
        replayed: e.reply.replayed,
        model: e.reply.model,
        messageId: e.reply.messageId,
        error: e.reply.error,
      },
      feedback: e.feedback.rating,
    }));
    store.set(KEY.transcript, JSON.stringify({ conversation: S.conversationId, entries }));
  }

  function restoreTranscript() {
    let saved;
    try { saved = JSON.parse(store.get(KEY.transcript) || 'null'); } catch { return; }
    if (!saved || saved.conversation !== S.conversationId || !Array.isArray(saved.entries)) return;
    const fragment = document.createDocumentFragment();
    const restored = [];
    const resume = [];
    for (const data of saved.entries) {
      if (!data || typeof data.id !== 'string' || S.byClientId.has(data.id)) continue;
      const entry = newEntry({ ...data, text: str(data.text) });
      const reply = data.reply || {};
      Object.assign(entry.reply, {
        text: str(reply.text),
        status: str(reply.status) || 'pending',
        sources: Array.isArray(reply.sources) ? reply.sources : [],
        offline: Boolean(reply.offline),
        replayed: Boolean(reply.replayed),
        model: reply.model || null,
        messageId: reply.messageId || null,
        error: reply.error || null,
      });
      entry.finished = Boolean(data.finished);
      if (!entry.finished) {
        // Left unanswered on the previous page: ask again with the same id, unless stale.
        if (data.cancelRequested) entry.reply.status = 'cancelled';
        else if (Date.now() - entry.createdAt > RESUME_MAX_AGE_MS) entry.reply.status = 'interrupted';
        else resume.push(entry);
        entry.finished = entry.reply.status !== 'pending' && entry.reply.status !== 'streaming';
        entry.reply.stale = !entry.finished && entry.reply.text.length > 0;
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

  // ---------------------------------------------------------------- controls

  function updateControls() {
    const text = ui.input.value;
    const length = charCount(text);
    const signedOut = S.connection === 'signin';
    if (ui.counter) {
      ui.counter.textContent = `${length} / ${MAX_CHARS}`;
      ui.counter.classList.toggle('near', length >= MAX_CHARS * 0.9);
      ui.counter.classList.toggle('over', length > MAX_CHARS);
    }
    ui.input.disabled = signedOut;
    ui.send.disabled = signedOut || !text.trim() || length > MAX_CHARS;
    const active = S.outbox[0];
    ui.stop.hidden = !active;
    ui.stop.disabled = Boolean(active && active.cancelRequested);
    ui.stop.textContent = active && active.cancelRequested ? 'Stopping…' : 'Stop';
    root.classList.toggle('busy', Boolean(active));
    if (ui.mentor) {
      const asking = S.requests.some((r) => r.kind === 'mentor');
      ui.mentor.disabled = !S.ready || asking;
      ui.mentor.textContent = asking ? 'Asking…' : 'Ask my mentor';
    }
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
    root.classList.toggle('open', open);
    if (ui.toggle) {
      ui.toggle.setAttribute('aria-expanded', String(open));
      ui.toggle.classList.remove('unread');
    }
    if (open) ui.input.focus();
    else if (ui.toggle) ui.toggle.focus();
  }

  function wireControls() {
    if (ui.form) {
      ui.form.addEventListener('submit', (event) => {
        event.preventDefault();
        submit();
      });
    } else {
      ui.send.addEventListener('click', submit);
    }
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
    if (ui.mentor) ui.mentor.addEventListener('click', () => askMentor());
    if (ui.toggle) {
      ui.toggle.addEventListener('click', () => setPanelOpen(!root.classList.contains('open')));
    }
    if (ui.close) ui.close.addEventListener('click', () => setPanelOpen(false));
    root.addEventListener('keydown', (event) => {
      if (event.key === 'Escape' && root.classList.contains('open')) setPanelOpen(false);
    });

    window.addEventListener('online', () => {
      if (S.reconnectTimer) connect();
    });
    window.addEventListener('pagehide', () => {
      saveTranscript();
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
      conversationId: S.conversationId,
      learner: S.learner,
      streaming: S.outbox.length > 0,
      activeId: S.outbox[0] ? S.outbox[0].id : null,
      queued: Math.max(0, S.outbox.length - 1),
      reconnectAttempt: S.attempt,
      messages: S.entries.flatMap((e) => [
        {
          role: 'learner',
          id: e.id,
          text: e.text,
          messageId: e.messageId,
          acked: e.acked,
          duplicate: e.duplicate,
        },
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
        text: r.text,
        status: r.status,
        flagId: r.flagId,
        error: r.error,
      })),
      errors: S.errors,
    };
    return JSON.parse(JSON.stringify(snapshot)); // a copy: tests cannot change the panel
  }

  window.companionChat = { send, stop, rate, comment, askMentor, state };

  takeTokenFromUrl();
  wireControls();
  updateControls();
  connect();
})();
