/*
 * The demo course site's one script: which token its <companion-chat> uses. A `?token=` in the
 * address (a learner's token from the course platform) wins; it is kept for this tab and
 * removed from the address bar. Without one the element asks the demo for a visitor token
 * (its `token-endpoint`). Runs before /widget.js (both deferred, in document order).
 */
(() => {
  'use strict';
  const KEY = 'companion.demo.token';
  const chat = document.querySelector('companion-chat');
  if (!chat) return;
  let token = null;
  try {
    const url = new URL(location.href);
    token = url.searchParams.get('token');
    if (token) {
      url.searchParams.delete('token');
      history.replaceState(history.state, '', url.pathname + url.search + url.hash);
      sessionStorage.setItem(KEY, token);
    } else {
      token = sessionStorage.getItem(KEY);
    }
  } catch { /* storage disabled: the demo token it is */ }
  if (token) chat.setAttribute('token', token);
})();
