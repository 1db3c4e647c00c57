/* The chat page: conversations kept in this browser (localStorage), answers streamed from
 * POST v1/chat/completions (SSE read with fetch and a stream reader) and rendered as Markdown while they
 * grow (marked, then DOMPurify: model output is untrusted), with the answer's confidence, the adapter
 * that gave it and feedback buttons (POST v1/feedback) under each one. */
"use strict";

(() => {
  const { el } = Council;
  const STORE = "council.conversations";
  const CURRENT = "council.currentConversation";
  const UNTITLED = "New conversation";
  const $ = (id) => document.getElementById(id);
  const list = $("conversations"), box = $("messages"), form = $("composer"), input = $("prompt");
  const sendButton = $("send");

  let conversations = load();
  let currentId = read(CURRENT);
  let streaming = null; // {controller, msg, node} while an answer streams

  DOMPurify.addHook("afterSanitizeAttributes", (node) => {
    if (node.tagName === "A") {
      node.setAttribute("target", "_blank");
      node.setAttribute("rel", "noopener noreferrer");
    }
  });

  function markdown(text) {
    return DOMPurify.sanitize(marked.parse(text || "", { gfm: true, breaks: true }));
  }

  function read(name) {
    try { return localStorage.getItem(name); } catch (err) { return null; }
  }

  function load() {
    try {
      const value = JSON.parse(read(STORE) || "[]");
      return Array.isArray(value) ? value.filter((c) => c && Array.isArray(c.messages)) : [];
    } catch (err) {
      return [];
    }
  }

  function save() {
    try {
      localStorage.setItem(STORE, JSON.stringify(conversations));
      if (currentId) localStorage.setItem(CURRENT, currentId);
    } catch (err) { /* storage full or disabled: the conversation lives until the page reloads */ }
  }

  function newId() {
    return Date.now().toString(36) + Math.random().toString(36).slice(2, 10);
  }

  function current() {
    return conversations.find((c) => c.id === currentId) || null;
  }

  function startConversation() {
    const open = current();
    if (open && open.messages.length === 0) return open;
    const conversation = { id: newId(), title: UNTITLED, created: Date.now(), messages: [] };
    conversations.unshift(conversation);
    currentId = conversation.id;
    save();
    return conversation;
  }

  function select(id) {
    currentId = id;
    save();
    render();
    input.focus();
  }

  function remove(id) {
    if (streaming && current() && current().id === id) streaming.controller.abort();
    conversations = conversations.filter((c) => c.id !== id);
    if (currentId === id) currentId = conversations.length ? conversations[0].id : null;
    save();
    render();
  }

  function renderList() {
    list.replaceChildren(...conversations.map((c) => el("li", { class: c.id === currentId ? "active" : null },
      el("button", { type: "button", class: "open", title: c.title, onclick: () => select(c.id) }, c.title || UNTITLED),
      el("button", { type: "button", class: "delete quiet", title: "Delete this conversation",
                     "aria-label": "Delete conversation " + c.title, onclick: () => remove(c.id) }, "×"))));
  }

  function render() {
    renderList();
    const conversation = current();
    const messages = conversation ? conversation.messages : [];
    if (!messages.length) {
      box.replaceChildren(el("p", { class: "empty" }, "Ask anything. Tell Council when it is wrong: a correction "
        + "helps at once and is learned tonight."));
      return;
    }
    box.replaceChildren(...messages.map((msg) => {
      const node = messageNode(msg);
      if (streaming && streaming.msg === msg) streaming.node = node;
      return node;
    }));
    box.scrollTop = box.scrollHeight;
  }

  function messageNode(msg) {
    if (msg.role === "user") return el("div", { class: "msg user" }, el("div", { class: "bubble" }, msg.content));
    const answer = el("div", { class: "answer markdown" });
    answer.innerHTML = markdown(msg.content);
    return el("div", { class: "msg assistant" + (msg.council ? "" : " pending"),
                       "data-record-id": msg.council ? msg.council.record_id : null }, answer, footer(msg));
  }

  function footer(msg) {
    if (msg.error) return el("p", { class: "error", role: "alert" }, msg.error);
    if (msg.stopped) return el("p", { class: "muted small" }, "stopped — this answer was not recorded");
    if (!msg.council) return el("p", { class: "muted small typing" }, "thinking…");
    const c = msg.council;
    const confidence = typeof c.confidence === "number" ? c.confidence.toFixed(2) : "?";
    const used = (c.context_ids || []).length;
    const meta = el("div", { class: "meta", title: "record " + c.record_id + "; route " + (c.route || []).join(" → ")
                                                   + (c.model ? "; model " + c.model : "") },
      el("span", { class: "confidence" + (c.success === false ? " low" : "") }, "confidence " + confidence),
      c.success === false ? el("span", { class: "flag" }, "low — kept for tonight") : null,
      el("span", { class: "answered-by" }, c.adapter ? "adapter " + c.adapter : "base model"),
      used ? el("span", { class: "memory" }, "recalled " + used + (used === 1 ? " memory" : " memories")) : null);
    return el("div", { class: "under" }, meta, feedbackBar(msg));
  }

  // thumbs icons: Feather icons (MIT licence), drawn as SVG so they show without an emoji font
  const THUMB_UP = "M14 9V5a3 3 0 0 0-3-3l-4 9v11h11.28a2 2 0 0 0 2-1.7l1.38-9a2 2 0 0 0-2-2.3zM7 22H4a2 2 0 0 "
    + "1-2-2v-7a2 2 0 0 1 2-2h3";
  const THUMB_DOWN = "M10 15v4a3 3 0 0 0 3 3l4-9V2H5.72a2 2 0 0 0-2 1.7l-1.38 9a2 2 0 0 0 2 2.3zm7-13h2.67A2.31 "
    + "2.31 0 0 1 22 4v7a2.31 2.31 0 0 1-2.33 2H17";

  function icon(path) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("class", "icon");
    const shape = document.createElementNS("http://www.w3.org/2000/svg", "path");
    shape.setAttribute("d", path);
    svg.append(shape);
    return svg;
  }

  function feedbackBar(msg) {
    const given = msg.feedback || {};
    const status = el("span", { class: "fb-status" + (given.failed ? " error" : ""), role: "status" },
                      given.status || "");
    const textarea = el("textarea", { rows: 3, placeholder: "The right answer", "aria-label": "The right answer" });
    const correction = el("form", { class: "correction", hidden: true }, textarea,
      el("div", { class: "row" },
        el("button", { type: "submit", class: "primary send-correction" }, "Send correction"),
        el("button", { type: "button", class: "quiet", onclick: () => { correction.hidden = true; } }, "Cancel")));
    const bar = el("div", { class: "feedback" },
      el("button", { type: "button", class: "thumb thumb-up", title: "Good answer", "aria-label": "Thumbs up",
                     "aria-pressed": String(given.thumbs === "up"),
                     onclick: () => sendFeedback(msg, { thumbs: "up" }, bar) }, icon(THUMB_UP), "Good"),
      el("button", { type: "button", class: "thumb thumb-down", title: "Wrong answer", "aria-label": "Thumbs down",
                     "aria-pressed": String(given.thumbs === "down"),
                     onclick: () => sendFeedback(msg, { thumbs: "down" }, bar) }, icon(THUMB_DOWN), "Wrong"),
      el("button", { type: "button", class: "correct", onclick: () => {
        correction.hidden = !correction.hidden;
        if (!correction.hidden) textarea.focus();
      } }, "Correct this answer"),
      status, correction,
      given.correction ? el("p", { class: "given-correction" }, "Your correction: ", given.correction) : null);
    correction.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = textarea.value.trim();
      if (text) sendFeedback(msg, { thumbs: "down", correction: text }, bar);
    });
    return bar;
  }

  async function sendFeedback(msg, what, bar) {
    const status = bar.querySelector(".fb-status");
    status.className = "fb-status";
    status.textContent = "sending…";
    let state;
    try {
      const response = await Council.call("v1/feedback", {
        method: "POST", headers: { "Content-Type": "application/json" },
        body: JSON.stringify(Object.assign({ record_id: msg.council.record_id }, what)) });
      state = response.ok
        ? { thumbs: what.thumbs, correction: what.correction || (msg.feedback || {}).correction,
            status: what.correction ? "thanks — correction saved" : "thanks — saved" }
        : Object.assign({}, msg.feedback, { status: await Council.errorMessage(response), failed: true });
    } catch (err) {
      state = Object.assign({}, msg.feedback, { status: err.message, failed: true });
    }
    msg.feedback = state;
    save();
    bar.replaceWith(feedbackBar(msg));
  }

  /* Feed one SSE event ("data: ..." lines) into msg; true once the stream says [DONE]. */
  function takeEvent(event, msg) {
    const data = event.split(/\r?\n/).filter((line) => line.startsWith("data:"))
      .map((line) => line.slice(5).replace(/^ /, "")).join("\n");
    if (!data) return false;
    if (data === "[DONE]") return true;
    let chunk;
    try { chunk = JSON.parse(data); } catch (err) { return false; }
    if (chunk.error) {
      msg.error = chunk.error.message || "the server reported an error";
      return false;
    }
    const choice = (chunk.choices || [])[0];
    if (!choice) return false;
    if (choice.delta && typeof choice.delta.content === "string") msg.content += choice.delta.content;
    if (choice.finish_reason !== null && choice.finish_reason !== undefined && chunk.council) {
      msg.council = chunk.council;
      msg.finish_reason = choice.finish_reason;
    }
    return false;
  }

  function paint() {
    if (!streaming || streaming.painting) return;
    streaming.painting = requestAnimationFrame(() => {
      if (!streaming) return;
      streaming.painting = 0;
      const stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
      streaming.node.querySelector(".answer").innerHTML = markdown(streaming.msg.content);
      if (stick) box.scrollTop = box.scrollHeight;
    });
  }

  async function readStream(response, msg) {
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += decoder.decode(value, { stream: true });
      for (let cut = buffer.search(/\r?\n\r?\n/); cut >= 0; cut = buffer.search(/\r?\n\r?\n/)) {
        const event = buffer.slice(0, cut);
        buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
        if (takeEvent(event, msg)) return;
      }
      paint();
    }
    if (!msg.council && !msg.error) msg.error = "the stream ended before the answer was complete";
  }

  function history(conversation, except) {
    return conversation.messages
      .filter((m) => m !== except && (m.role === "user" || (m.role === "assistant" && m.council)))
      .map((m) => ({ role: m.role, content: m.content }));
  }

  function setBusy(busy) {
    sendButton.textContent = busy ? "Stop" : "Send";
    sendButton.classList.toggle("stop", busy);
  }

  async function send(text) {
    const conversation = startConversation();
    conversation.messages.push({ role: "user", content: text });
    if (conversation.title === UNTITLED) conversation.title = text.replace(/\s+/g, " ").slice(0, 60);
    const msg = { role: "assistant", content: "" };
    conversation.messages.push(msg);
    // conversations most recently used first
    conversations = [conversation, ...conversations.filter((c) => c !== conversation)];
    streaming = { controller: new AbortController(), msg, node: null, painting: 0 };
    save();
    render();
    setBusy(true);
    try {
      const response = await Council.call("v1/chat/completions", {
        method: "POST", headers: { "Content-Type": "application/json" }, signal: streaming.controller.signal,
        body: JSON.stringify({ model: "council", messages: history(conversation, msg), stream: true }) });
      if (!response.ok) msg.error = await Council.errorMessage(response);
      else await readStream(response, msg);
    } catch (err) {
      if (err.name === "AbortError") msg.stopped = true;
      else msg.error = err.message || String(err);
    } finally {
      const node = streaming.node;
      if (streaming.painting) cancelAnimationFrame(streaming.painting);
      streaming = null;
      setBusy(false);
      save();
      if (node && node.isConnected) node.replaceWith(messageNode(msg));
      box.scrollTop = box.scrollHeight;
    }
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (streaming) {
      streaming.controller.abort();
      return;
    }
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    send(text);
  });

  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      form.requestSubmit();
    }
  });

  $("new-chat").addEventListener("click", () => {
    if (streaming) streaming.controller.abort();
    startConversation();
    render();
    input.focus();
  });

  render();
  input.focus();
})();
