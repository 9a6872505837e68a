// Event page: drag-and-drop upload with a progress bar per file and overall (XHR), and the processing status.
"use strict";

(function () {
  const root = document.getElementById("event");
  if (!root) return;
  const eventId = root.dataset.eventId;
  const maxBytes = Number(root.dataset.maxBytes);
  const csrf = document.querySelector('meta[name="csrf-token"]').content;
  const dropzone = document.getElementById("dropzone");
  const input = document.getElementById("file-input");
  const list = document.getElementById("uploads");
  const overall = document.getElementById("overall");
  const overallBar = document.getElementById("overall-progress");
  const overallText = document.getElementById("overall-text");
  const PARALLEL = 3;
  const queue = [];
  const items = [];
  let running = 0;
  let polling = null;

  function el(tag, attrs = {}, children = []) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
    for (const child of children) node.append(child);  // strings become text nodes
    return node;
  }

  function updateOverall() {
    const total = items.reduce((s, it) => s + it.file.size, 0) || 1;
    const loaded = items.reduce((s, it) => s + it.loaded, 0);
    const finished = items.filter((it) => it.state !== "waiting" && it.state !== "uploading").length;
    overall.hidden = items.length === 0;
    overallBar.value = loaded / total;
    overallText.textContent = `${finished} of ${items.length} files uploaded`;
  }

  function setState(it, state, text) {
    it.state = state;
    it.row.dataset.state = state;
    it.status.textContent = text;
  }

  function add(files) {
    for (const file of files) {
      const bar = el("progress", {max: "1", value: "0"});
      const status = el("span", {class: "small"}, ["waiting"]);
      const row = el("li", {"data-state": "waiting"}, [el("span", {class: "name"}, [file.name]), bar, status]);
      list.append(row);
      const it = {file, bar, status, row, loaded: 0, state: "waiting"};
      items.push(it);
      if (file.size > maxBytes) {
        setState(it, "rejected", `too large (limit ${(maxBytes / 1048576).toFixed(0)} MB)`);
        continue;
      }
      queue.push(it);
    }
    updateOverall();
    pump();
  }

  function pump() {
    while (running < PARALLEL && queue.length) send(queue.shift());
  }

  function send(it) {
    running += 1;
    setState(it, "uploading", "uploading…");
    const form = new FormData();
    form.append("files", it.file, it.file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", `/events/${eventId}/photos`);
    xhr.setRequestHeader("X-CSRF-Token", csrf);
    xhr.upload.onprogress = (e) => {
      if (e.lengthComputable) {
        it.loaded = it.file.size * (e.loaded / e.total);
        it.bar.value = e.loaded / e.total;
        updateOverall();
      }
    };
    xhr.onload = () => {
      let body = {};
      try { body = JSON.parse(xhr.responseText); } catch (err) { body = {}; }
      it.loaded = it.file.size;
      it.bar.value = 1;
      if (xhr.status === 201 && body.uploaded && body.uploaded.length) {
        setState(it, "uploaded", "uploaded · finding faces…");
        it.photoId = body.uploaded[0].photo_id;
      } else if (body.rejected && body.rejected.length) {
        setState(it, "rejected", body.rejected[0].error);
      } else {
        setState(it, "rejected", body.detail || `upload failed (HTTP ${xhr.status})`);
      }
      done();
    };
    xhr.onerror = () => { setState(it, "rejected", "network error"); done(); };
    xhr.send(form);
  }

  function done() {
    running -= 1;
    updateOverall();
    pump();
    startPolling();
  }

  function row(p) {
    const thumb = p.status === "done"
      ? el("img", {class: "thumb", src: `/events/${eventId}/photos/${p.id}/thumb`, alt: "", loading: "lazy"}) : "";
    const status = [el("span", {class: `badge ${p.status}`}, [p.status])];
    if (p.reason) status.push(" ", el("span", {class: "small"}, [p.reason]));
    return el("tr", {"data-photo": p.id, "data-status": p.status}, [
      el("td", {}, [thumb]), el("td", {}, [p.filename]), el("td", {}, status),
      el("td", {}, [p.status === "done" ? String(p.faces) : ""]),
      el("td", {class: "small muted"}, [`${(p.size / 1048576).toFixed(1)} MB`]),
    ]);
  }

  async function refresh() {
    const response = await fetch(`/events/${eventId}/status`, {headers: {Accept: "application/json"}});
    if (!response.ok) return false;
    const s = await response.json();
    document.getElementById("status-summary").textContent =
      `${s.total} photos · ${s.done} done · ${s.processing} processing · ${s.failed} failed · ${s.faces} faces`;
    const processed = s.done + s.failed;
    document.getElementById("processing-bar").hidden = s.total === 0;
    document.getElementById("processing-progress").max = Math.max(s.total, 1);
    document.getElementById("processing-progress").value = processed;
    document.getElementById("processing-text").textContent = `${processed} / ${s.total} processed`;
    const tbody = document.getElementById("photo-rows");
    tbody.replaceChildren(...s.photos.map(row));
    const empty = document.getElementById("no-photos");
    if (empty) empty.hidden = s.photos.length > 0;
    const byId = new Map(s.photos.map((p) => [p.id, p]));
    for (const it of items) {
      const p = it.photoId && byId.get(it.photoId);
      if (p && p.status === "done") setState(it, "done", `done · ${p.faces} face${p.faces === 1 ? "" : "s"}`);
      if (p && p.status === "failed") setState(it, "failed", `failed: ${p.reason}`);
    }
    return s.processing > 0 || running > 0 || queue.length > 0;
  }

  function startPolling() {
    if (polling) return;
    polling = setInterval(async () => {
      let more = true;
      try { more = await refresh(); } catch (err) { more = true; }
      if (!more) { clearInterval(polling); polling = null; }
    }, 1500);
  }

  dropzone.addEventListener("dragover", (e) => { e.preventDefault(); dropzone.classList.add("over"); });
  dropzone.addEventListener("dragleave", () => dropzone.classList.remove("over"));
  dropzone.addEventListener("drop", (e) => {
    e.preventDefault();
    dropzone.classList.remove("over");
    add(e.dataTransfer.files);
  });
  dropzone.addEventListener("keydown", (e) => { if (e.key === "Enter" || e.key === " ") input.click(); });
  input.addEventListener("change", () => { add(input.files); input.value = ""; });

  for (const form of document.querySelectorAll("form[data-confirm]")) {
    form.addEventListener("submit", (e) => { if (!window.confirm(form.dataset.confirm)) e.preventDefault(); });
  }
  if (document.querySelector('#photo-rows tr[data-status="processing"]')) startPolling();
})();
