// The event kiosk: event code -> live webcam preview -> capture -> search -> this event's matching photos.
// The selfie only travels to the search API; nothing of it is kept in the page afterwards.
"use strict";

(function () {
  const ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";  // no 0/O, 1/I/L: what event codes are made of
  const COUNTDOWN_S = 3;
  const IDLE_RESET_S = 120;
  const $ = (id) => document.getElementById(id);
  const state = {event: null, stream: null, matches: [], current: null, idle: null};

  function el(tag, attrs = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    for (const child of children) node.append(child);  // strings become text nodes
    return node;
  }

  function show(step) {
    for (const s of document.querySelectorAll(".step")) s.hidden = s.id !== step;
    if (step !== "step-camera") stopCamera();
  }

  function say(id, text) { $(id).textContent = text || ""; }

  // --- idle: the next guest never sees the previous guest's photos ---
  function touch() {
    clearTimeout(state.idle);
    state.idle = setTimeout(restart, IDLE_RESET_S * 1000);
  }

  function restart() {
    closeViewer();
    state.event = null;
    state.matches = [];
    $("results").replaceChildren();
    $("code").value = "";
    say("code-message", "");
    show("step-code");
    $("code").focus();
  }

  // --- step 1: the event code ---
  function normalize(text) { return text.toUpperCase().replace(/[\s-]+/g, ""); }

  function buildKeypad() {
    const pad = $("keypad");
    for (const ch of ALPHABET) {
      const key = el("button", {type: "button", class: "key", "data-key": ch}, [ch]);
      key.addEventListener("click", () => { if ($("code").value.length < 8) $("code").value += ch; touch(); });
      pad.append(key);
    }
    const back = el("button", {type: "button", class: "key wide", "aria-label": "delete"}, ["⌫"]);
    back.addEventListener("click", () => { $("code").value = $("code").value.slice(0, -1); });
    pad.append(back);
  }

  async function enterCode(e) {
    if (e) e.preventDefault();
    const code = normalize($("code").value);
    if (code.length < 6 || [...code].some((c) => !ALPHABET.includes(c))) {
      say("code-message", "Event codes have 6 to 8 letters and digits. Please check the code.");
      return;
    }
    say("code-message", "");
    const response = await fetch(`/api/v1/events/${encodeURIComponent(code)}`, {headers: {Accept: "application/json"}});
    if (response.status === 429) { say("code-message", "Too many tries. Please wait a minute."); return; }
    if (!response.ok) { say("code-message", "No event with that code. Please check it and try again."); return; }
    state.event = await response.json();
    $("event-name").textContent = state.event.name;
    await openCamera();
  }

  // --- step 2: the camera ---
  async function openCamera(message) {
    show("step-camera");
    say("camera-message", message || "");
    $("capture").disabled = true;
    try {
      if (!state.stream) {
        state.stream = await navigator.mediaDevices.getUserMedia({
          video: {width: {ideal: 1280}, height: {ideal: 720}, facingMode: "user"}, audio: false,
        });
      }
      $("video").srcObject = state.stream;
      await $("video").play().catch(() => {});
      $("capture").disabled = false;
    } catch (err) {
      say("camera-message", "The camera cannot be opened. Please ask a member of staff.");
    }
  }

  function stopCamera() {
    if (state.stream) for (const track of state.stream.getTracks()) track.stop();
    state.stream = null;
    const video = $("video");
    if (video) video.srcObject = null;
  }

  function countdown(seconds) {
    const box = $("countdown");
    return new Promise((resolve) => {
      if (seconds <= 0) { resolve(); return; }
      box.hidden = false;
      let left = seconds;
      box.textContent = String(left);
      const timer = setInterval(() => {
        left -= 1;
        if (left <= 0) { clearInterval(timer); box.hidden = true; resolve(); } else box.textContent = String(left);
      }, 1000);
    });
  }

  async function capture() {
    touch();
    $("capture").disabled = true;
    const wait = Number(new URLSearchParams(location.search).get("countdown") ?? COUNTDOWN_S);
    await countdown(Math.min(Math.max(wait, 0), 10));
    const video = $("video");
    if (!video.videoWidth) { say("camera-message", "The camera is not ready yet. Please try again."); $("capture").disabled = false; return; }
    const canvas = document.createElement("canvas");
    canvas.width = video.videoWidth;
    canvas.height = video.videoHeight;
    canvas.getContext("2d").drawImage(video, 0, 0);
    const image = canvas.toDataURL("image/jpeg", 0.92);
    canvas.width = canvas.height = 0;  // drop the pixels
    await search(image);
  }

  // --- step 3: search and results ---
  async function search(image) {
    show("step-busy");
    let response;
    try {
      response = await fetch("/api/v1/search/face", {
        method: "POST", headers: {"Content-Type": "application/json", Accept: "application/json"},
        body: JSON.stringify({event_id: state.event.event_id, face_image: image}),
      });
    } catch (err) {
      await openCamera("The connection failed. Please try again.");
      return;
    }
    image = null;
    let body = {};
    try { body = await response.json(); } catch (err) { body = {}; }
    if (response.status === 422 && body.reason) { await openCamera(body.detail); return; }
    if (response.status === 429) { await openCamera("The kiosk is busy. Please try again in a moment."); return; }
    if (response.status === 404) { restart(); say("code-message", "This event has ended."); return; }
    if (!response.ok) { await openCamera("Something went wrong. Please try again."); return; }
    showResults(body);
  }

  function bar(similarity) {
    const width = Math.max(5, Math.min(100, ((similarity - 0.5) / 0.5) * 100));
    return el("span", {class: "simbar", role: "meter", "aria-valuemin": "0", "aria-valuemax": "1",
                       "aria-valuenow": String(similarity), "aria-label": "similarity"},
              [el("span", {class: "fill", style: `width:${width.toFixed(0)}%`})]);
  }

  function showResults(body) {
    state.matches = body.matches;
    show("step-results");
    const n = body.matches_found;
    $("results-title").textContent = n ? `${n} photo${n === 1 ? "" : "s"} of you` : "No photos found";
    $("results-notice").hidden = !body.notice;
    $("results-notice").textContent = body.notice || "";
    $("results-empty").hidden = n > 0;
    const items = body.matches.map((m, i) => {
      const button = el("button", {type: "button", class: "result", "data-index": String(i), "data-photo": m.photo_id}, [
        el("img", {src: m.thumbnail_url, alt: m.filename, loading: "lazy"}),
        bar(m.similarity),
        el("span", {class: "pct"}, [`${Math.round(m.similarity * 100)}% match`]),
      ]);
      button.addEventListener("click", () => openViewer(i));
      return el("li", {}, [button]);
    });
    $("results").replaceChildren(...items);
    touch();
  }

  function openViewer(i) {
    const m = state.matches[i];
    state.current = m;
    $("viewer-img").src = m.image_url;
    $("download").href = m.download_url;
    $("download").setAttribute("download", m.filename);
    $("viewer-sim").textContent = `${Math.round(m.similarity * 100)}% match`;
    $("order-form").hidden = true;
    say("order-message", "");
    $("viewer").hidden = false;
    touch();
  }

  function closeViewer() {
    $("viewer").hidden = true;
    $("viewer-img").removeAttribute("src");
    state.current = null;
  }

  async function order(e) {
    e.preventDefault();
    const form = $("order-form");
    const data = {token: state.current.token, name: form.elements.name.value, email: form.elements.email.value};
    const response = await fetch("/api/v1/orders", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(data),
    });
    let body = {};
    try { body = await response.json(); } catch (err) { body = {}; }
    say("order-message", response.ok ? "Thank you: your order is placed." : (body.detail || "The order failed."));
    if (response.ok) form.reset();
  }

  document.addEventListener("DOMContentLoaded", () => {
    buildKeypad();
    $("code-form").addEventListener("submit", enterCode);
    $("capture").addEventListener("click", capture);
    $("retake").addEventListener("click", () => openCamera());
    for (const b of document.querySelectorAll(".restart")) b.addEventListener("click", restart);
    $("viewer-close").addEventListener("click", closeViewer);
    $("order-open").addEventListener("click", () => { $("order-form").hidden = false; });
    $("order-form").addEventListener("submit", order);
    for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, touch, {passive: true});
    const preset = new URLSearchParams(location.search).get("code");
    if (preset) { $("code").value = normalize(preset); enterCode(); }
    touch();
  });
})();
