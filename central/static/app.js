// Revisit central: the little JavaScript the pages use (no build step, no inline scripts: CSP script-src 'self').
"use strict";

// Live views: an edge that cannot be reached shows a message instead of a broken image.
function watchLiveImages() {
  for (const img of document.querySelectorAll("img.mjpeg")) {
    img.addEventListener("error", () => {
      img.hidden = true;
      const note = img.parentElement.querySelector(".unreachable");
      if (note) note.hidden = false;
    });
  }
}

function el(tag, attrs = {}, children = []) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  for (const child of children) node.append(child);  // strings become text nodes: no HTML injection
  return node;
}

function crop(s) {
  // The server renders HH:MM:SS (24 h); match it.
  const when = new Date(s.best_ts).toLocaleTimeString([], {hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false});
  const name = s.visitor_label || "Visitor " + s.visitor_id.replaceAll("-", "").slice(0, 8);
  const href = "/visitors/" + s.visitor_id;
  const image = s.crop_url
    ? el("img", {class: "face small", src: s.crop_url, alt: "face seen on " + s.camera})
    : el("span", {class: "face none small"}, ["?"]);
  const meta = el("span", {class: "small muted"}, [`${s.site} · ${s.camera} · ${when}`]);
  return el("li", {"data-sighting": s.id, class: "new"},
            [el("a", {href}, [image]), el("span", {}, [el("a", {href}, [name]), el("br"), meta])]);
}

// Latest crops: poll the API for sightings stored after the newest one shown.
function pollLatest() {
  const list = document.getElementById("latest-crops");
  if (!list) return;
  let since = list.dataset.since;
  const tick = async () => {
    const url = new URL(list.dataset.feed, location.origin);
    url.searchParams.set("limit", "30");
    if (since) url.searchParams.set("since", since);
    try {
      const response = await fetch(url, {credentials: "same-origin", headers: {Accept: "application/json"}});
      if (response.status === 401) { location.reload(); return; }
      if (response.ok) {
        const rows = await response.json();
        if (rows.length) {
          list.querySelector(".empty")?.remove();
          since = rows[0].created_at;
          for (const s of rows.reverse()) list.prepend(crop(s));
          while (list.children.length > 60) list.lastElementChild.remove();
        }
      }
    } catch (err) { /* offline for a moment: try again on the next tick */ }
    setTimeout(tick, 2000);
  };
  setTimeout(tick, 2000);
}

document.addEventListener("DOMContentLoaded", () => { watchLiveImages(); pollLatest(); });
