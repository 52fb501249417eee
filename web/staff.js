// What the staff pages (the mentor page and the prompt studio) share: elements built without
// parsing HTML, the notice line, calls to the REST API with the caller's token, and where that
// token comes from. Loaded before the page's own script, as `window.CompanionStaff`.
window.CompanionStaff = (function () {
  "use strict";

  const $ = (id) => document.getElementById(id);

  // An element; `text` sets its text, `on<event>` adds a listener; children that are not nodes
  // become text nodes: nothing is parsed as HTML.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") node.className = value;
      else if (key === "text") node.textContent = value;
      else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
      else node.setAttribute(key, value);
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  // Shows `message` in the page's notice line; an empty one hides it.
  function notice(message) {
    const box = $("notice");
    box.textContent = message || "";
    box.hidden = !message;
  }

  // The JSON body of a call with `token`; a failed call throws an error with the server's
  // message and the `status`.
  async function callApi(token, path, options) {
    const response = await fetch(path, {
      ...(options || {}),
      headers: {
        Authorization: "Bearer " + token,
        "Content-Type": "application/json",
        ...((options && options.headers) || {}),
      },
    });
    const body = await response.json().catch(() => null);
    if (!response.ok) {
      const message = body && body.error ? body.error.message : response.statusText;
      const error = new Error(message);
      error.status = response.status;
      throw error;
    }
    return body;
  }

  // What a failed call tells the user: a refused token as such, otherwise the server's message.
  function failureMessage(error) {
    return error.status === 401 ? "This token is not valid or has expired." : error.message;
  }

  // Opens the page with the token of `?token=` (then taken out of the address bar and the
  // history) or the one this tab kept under `key`; without either, shows the token form and
  // `prompt`. A token typed in the form is opened too.
  function startWithToken(key, open, prompt) {
    $("token-form").addEventListener("submit", (event) => {
      event.preventDefault();
      open($("token-input").value.trim());
    });
    const fromUrl = new URLSearchParams(window.location.search).get("token");
    const token = fromUrl || sessionStorage.getItem(key);
    if (fromUrl) window.history.replaceState(null, "", window.location.pathname);
    if (token) {
      open(token);
    } else {
      $("token-form").hidden = false;
      notice(prompt);
    }
  }

  return { $, el, notice, callApi, failureMessage, startWithToken };
})();
