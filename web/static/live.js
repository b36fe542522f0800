// omero-adi status page: keeps an open page current without reloading it, and sends the retry
// and cancel forms through the JSON API. The page works without this script.
(function () {
  "use strict";
  var state = document.getElementById("live-state");
  var flash = document.getElementById("flash");

  function show(msg) {
    flash.textContent = msg;
    flash.hidden = !msg;
  }

  // refresh fetches this page again and swaps in its main part.
  var busy = false, again = false;
  function refresh() {
    if (busy) { again = true; return; }
    busy = true;
    fetch(location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) {
        if (r.status === 401 || r.redirected) { location.assign("/login"); return null; }
        return r.text();
      })
      .then(function (html) {
        if (html === null) { return; }
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("live");
        var cur = document.getElementById("live");
        if (fresh && cur) {
          var active = document.activeElement && document.activeElement.name;
          if (active && cur.querySelector("form.filters [name='" + active + "']")) { return; } // typing in a filter
          cur.replaceChildren.apply(cur, Array.prototype.slice.call(fresh.childNodes));
        }
      })
      .catch(function () {})
      .finally(function () {
        busy = false;
        if (again) { again = false; refresh(); }
      });
  }

  // The retry and cancel buttons post to the API; its message is shown when it refuses.
  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (!form.dataset || !form.dataset.action) { return; }
    ev.preventDefault();
    var body = new URLSearchParams(new FormData(form));
    fetch(form.action, {
      method: "POST", credentials: "same-origin", body: body,
      headers: { "Accept": "application/json", "X-CSRF-Token": body.get("csrf") }
    }).then(function (r) {
      return r.json().then(function (j) {
        if (!r.ok) { show(j.error || ("The request failed (" + r.status + ").")); return; }
        show("");
        refresh();
      });
    }).catch(function () { show("The agent did not answer: reload the page and try again."); });
  });

  if (!window.EventSource) { return; }
  var es = new EventSource("/events");
  es.addEventListener("change", refresh);
  es.onopen = function () { state.textContent = "Live: updates itself while open."; };
  es.onerror = function () { state.textContent = "Live updates paused: reconnecting…"; };
})();
