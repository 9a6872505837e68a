// The event kiosk: event code -> live webcam preview -> capture -> search -> this event's matching photos.
// Also a guest's own phone (the QR code opens /kiosk?code=...): front camera or a photo picked from the phone.
// Up to MAX_SELFIES selfies (other angles) are searched together; they stay in this page's memory only until
// "Start over" (or the idle reset) and only travel to the search API.
"use strict";

(function () {
  const ALPHABET = "ABCDEFGHJKMNPQRSTUVWXYZ23456789";  // no 0/O, 1/I/L: what event codes are made of
  const COUNTDOWN_S = 3;
  const IDLE_RESET_S = 120;
  const MAX_SELFIES = 3;
  const MAX_SIDE = 1280;  // selfies are scaled down to this before they leave the device
  const $ = (id) => document.getElementById(id);
  const state = {event: null, stream: null, matches: [], current: null, idle: null, selfies: [], basket: new Map()};

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
    state.selfies = [];
    state.basket = new Map();
    $("order-confirmation").hidden = true;
    updateBasket();
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
    $("camera-hint").textContent = state.selfies.length
      ? `Selfie ${state.selfies.length + 1} of ${MAX_SELFIES}: turn your head a little, or tilt the phone.`
      : "Look at the camera, alone, in good light.";
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
      say("camera-message", window.isSecureContext
        ? "The camera cannot be opened. Use a photo from this phone instead, or ask a member of staff."
        : "The camera needs a secure (https) page. Use a photo from this phone instead.");
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
    await addSelfie(toJpeg(video, video.videoWidth, video.videoHeight));
  }

  // A JPEG data URL of the source, scaled down to MAX_SIDE (the canvas is emptied at once).
  function toJpeg(source, width, height) {
    const scale = Math.min(1, MAX_SIDE / Math.max(width, height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(width * scale);
    canvas.height = Math.round(height * scale);
    canvas.getContext("2d").drawImage(source, 0, 0, canvas.width, canvas.height);
    const image = canvas.toDataURL("image/jpeg", 0.92);
    canvas.width = canvas.height = 0;  // drop the pixels
    return image;
  }

  // A photo picked from the phone (or taken by its camera app): decoded here, never uploaded as the file itself.
  async function pickSelfie() {
    const input = $("selfie-file");
    const file = input.files && input.files[0];
    input.value = "";
    if (!file) return;
    touch();
    let bitmap;
    try {
      bitmap = await createImageBitmap(file, {imageOrientation: "from-image"});
    } catch (err) {
      say("camera-message", "That file is not a photo this page can read. Please pick a JPEG or PNG.");
      return;
    }
    const image = toJpeg(bitmap, bitmap.width, bitmap.height);
    bitmap.close();
    await addSelfie(image);
  }

  async function addSelfie(image) {
    state.selfies.push(image);
    const ok = await search(state.selfies);
    if (!ok) state.selfies.pop();  // a refused selfie is not kept
  }

  // --- step 3: search and results ---
  // Search with every selfie so far; true when results are shown.
  async function search(selfies) {
    show("step-busy");
    let response;
    const payload = selfies.length === 1
      ? {event_id: state.event.event_id, face_image: selfies[0]}
      : {event_id: state.event.event_id, face_images: selfies};
    try {
      response = await fetch("/api/v1/search/face", {
        method: "POST", headers: {"Content-Type": "application/json", Accept: "application/json"},
        body: JSON.stringify(payload),
      });
    } catch (err) {
      await openCamera("The connection failed. Please try again.");
      return false;
    }
    let body = {};
    try { body = await response.json(); } catch (err) { body = {}; }
    if (response.status === 422 && body.reason) { await openCamera(body.detail); return false; }
    if (response.status === 429) { await openCamera("The kiosk is busy. Please try again in a moment."); return false; }
    if (response.status === 404) { restart(); say("code-message", "This event has ended."); return false; }
    if (!response.ok) { await openCamera("Something went wrong. Please try again."); return false; }
    showResults(body);
    return true;
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
    const k = state.selfies.length;
    $("selfie-count").hidden = k < 2;
    $("selfie-count").textContent = `Searched with ${k} selfies.`;
    $("add-angle").hidden = k >= MAX_SELFIES;
    // the tokens of the new results replace those of the same photos in the order
    for (const m of body.matches) if (state.basket.has(m.photo_id)) state.basket.set(m.photo_id, m);
    updateBasket();
    touch();
  }

  function updateBasket() {
    const n = state.basket.size;
    $("basket").hidden = n === 0;
    $("basket-text").textContent = `${n} photo${n === 1 ? "" : "s"} in your order`;
    $("order-count").textContent = n ? `${n} photo${n === 1 ? "" : "s"} in this order` : "";
    for (const b of document.querySelectorAll("#results .result")) b.classList.toggle("in-order", state.basket.has(b.dataset.photo));
  }

  function openViewer(i) {
    const m = state.matches[i];
    state.current = m;
    $("viewer-img").src = m.image_url;
    $("download").href = m.download_url;
    $("download").setAttribute("download", m.filename);
    $("viewer-sim").textContent = `${Math.round(m.similarity * 100)}% match`;
    $("order-form").hidden = true;
    $("order-open").textContent = state.basket.has(m.photo_id) ? "In your order ✓" : "Order this photo";
    say("order-message", "");
    $("viewer").hidden = false;
    touch();
  }

  function closeViewer() {
    $("viewer").hidden = true;
    $("viewer-img").removeAttribute("src");
    state.current = null;
  }

  function addToOrder() {
    if (state.current) state.basket.set(state.current.photo_id, state.current);
    $("order-open").textContent = "In your order ✓";
    updateBasket();
    $("order-form").hidden = false;
  }

  async function order(e) {
    e.preventDefault();
    const form = $("order-form");
    const tokens = [...state.basket.values()].map((m) => m.token);
    if (!tokens.length) { say("order-message", "Choose a photo first."); return; }
    const data = {tokens, name: form.elements.name.value, contact: form.elements.contact.value};
    const response = await fetch("/api/v1/orders", {
      method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(data),
    });
    let body = {};
    try { body = await response.json(); } catch (err) { body = {}; }
    if (!response.ok) { say("order-message", body.detail || "The order failed."); return; }
    const n = body.photos;
    say("order-message", `Thank you: your order ${body.reference} is placed (${n} photo${n === 1 ? "" : "s"}).`);
    const box = $("order-confirmation");
    box.replaceChildren("Thank you! Your order reference is ", el("strong", {id: "order-reference"}, [body.reference]),
      ` (${n} photo${n === 1 ? "" : "s"}). Show it to the photographer.`);
    box.hidden = false;
    form.reset();
    state.basket = new Map();
    updateBasket();
  }

  document.addEventListener("DOMContentLoaded", () => {
    buildKeypad();
    $("code-form").addEventListener("submit", enterCode);
    $("capture").addEventListener("click", capture);
    $("retake").addEventListener("click", () => { state.selfies = []; openCamera(); });
    $("add-angle").addEventListener("click", () => openCamera());
    $("selfie-file").addEventListener("change", pickSelfie);
    $("basket-order").addEventListener("click", () => { if (state.current === null && state.basket.size) {
      openViewer(Math.max(0, state.matches.findIndex((m) => state.basket.has(m.photo_id)))); $("order-form").hidden = false; } });
    for (const b of document.querySelectorAll(".restart")) b.addEventListener("click", restart);
    $("viewer-close").addEventListener("click", closeViewer);
    $("order-open").addEventListener("click", addToOrder);
    $("order-form").addEventListener("submit", order);
    for (const type of ["pointerdown", "keydown"]) document.addEventListener(type, touch, {passive: true});
    const preset = new URLSearchParams(location.search).get("code");
    if (preset) { $("code").value = normalize(preset); enterCode(); }
    touch();
  });
})();
