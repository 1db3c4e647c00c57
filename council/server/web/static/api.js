/* Council's web pages: calls to the server with the API key, shared by chat.js and loop.js.
 *
 * When server.api_key is set every /v1/* route needs "Authorization: Bearer <key>". The first 401 shows
 * the key form (base.html); the key is kept in localStorage and sent on every call after. Calls made
 * while the form is open wait for it and are then retried with the key. */
"use strict";

const Council = (() => {
  const KEY = "council.apiKey";
  let pending = null; // the promise of the open key form, shared by every call that got a 401

  function key() {
    try { return localStorage.getItem(KEY) || ""; } catch (err) { return ""; }
  }

  function headers(extra) {
    const out = Object.assign({}, extra || {});
    if (key()) out.Authorization = "Bearer " + key();
    return out;
  }

  /* Show the key form; resolves once a key is saved, rejects when the user cancels. */
  function askForKey(refused) {
    if (pending) return pending;
    const form = document.getElementById("key-form");
    const input = document.getElementById("key-input");
    const cancel = document.getElementById("key-cancel");
    document.getElementById("key-message").textContent = refused
      ? "That API key was refused; enter the server's key (server.api_key)."
      : "This server needs an API key.";
    form.hidden = false;
    input.value = "";
    input.focus();
    pending = new Promise((resolve, reject) => {
      function done(ok) {
        form.hidden = true;
        form.removeEventListener("submit", onSubmit);
        cancel.removeEventListener("click", onCancel);
        pending = null;
        if (ok) resolve(); else reject(new Error("an API key is needed to use this server"));
      }
      function onSubmit(event) {
        event.preventDefault();
        const value = input.value.trim();
        if (!value) return;
        try { localStorage.setItem(KEY, value); } catch (err) { /* private mode: the key lives until reload */ }
        done(true);
      }
      function onCancel() { done(false); }
      form.addEventListener("submit", onSubmit);
      cancel.addEventListener("click", onCancel);
    });
    return pending;
  }

  /* fetch() with the key; a 401 asks for the key and retries. Returns the Response. */
  async function call(url, options) {
    const opts = options || {};
    for (;;) {
      const sent = key();
      const response = await fetch(url, Object.assign({}, opts, { headers: headers(opts.headers) }));
      if (response.status !== 401) return response;
      if (pending) { await pending; continue; }
      if (key() !== sent) continue; // another call saved a key meanwhile
      await askForKey(Boolean(sent));
    }
  }

  /* The message of an OpenAI-shaped error body, or the HTTP status when there is none. */
  async function errorMessage(response) {
    try {
      const body = await response.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch (err) { /* not JSON */ }
    return "HTTP " + response.status + " " + (response.statusText || "");
  }

  /* GET (or any method) a JSON body; throws an Error holding the server's message when not 2xx. */
  async function json(url, options) {
    const response = await call(url, options);
    if (!response.ok) throw new Error(await errorMessage(response));
    return response.json();
  }

  /* el("p", {class: "x"}, "text", child, ...): a DOM element; strings become text nodes (never HTML). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat(Infinity)) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function when(value) {
    if (value === null || value === undefined || value === "") return "—";
    const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
    return isNaN(date) ? String(value) : date.toLocaleString();
  }

  return { call, json, errorMessage, headers, el, when };
})();
