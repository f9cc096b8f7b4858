// Live: the server's /live stream says when the indexed head moves; the page then swaps in its
// fresh content (the same URL, fetched again), so new blocks and state changes appear without a reload.
(function () {
  "use strict";
  var dot = document.getElementById("live-dot");
  var last = null;
  var busy = false;
  function refresh() {
    if (busy || document.body.dataset.live !== "yes") { return; }
    busy = true;
    fetch(window.location.href, { headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) {
        if (!html) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main");
        var main = document.getElementById("main");
        if (fresh && main && fresh.innerHTML !== main.innerHTML) { main.innerHTML = fresh.innerHTML; }
      })
      .catch(function () { /* the next head change tries again */ })
      .then(function () { busy = false; });
  }
  if (!window.EventSource) { return; }
  var source = new EventSource("/live");
  source.onopen = function () { if (dot) { dot.classList.add("on"); } };
  source.onerror = function () { if (dot) { dot.classList.remove("on"); } };
  source.onmessage = function (msg) {
    var head = JSON.parse(msg.data);
    var block = document.getElementById("head-block");
    var events = document.getElementById("head-events");
    if (block) { block.textContent = head.block; }
    if (events) { events.textContent = head.events; }
    if (last !== null && last !== head.events) { refresh(); }
    last = head.events;
  };
})();
