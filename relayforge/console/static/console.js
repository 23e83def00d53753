// Relayforge console: the little JavaScript it needs (no inline script: the CSP forbids it).
// 1. Parts marked data-refresh="<url>" are refreshed every 10 s without a full reload.
// 2. Forms marked data-async post with fetch; the server answers JSON {status, message} and,
//    with data-poll="<url>", the status shown in [data-status] (and the attempt and last error
//    beside it) is polled until it settles, and the form's message then says how it ended.
(function () {
  "use strict";
  var csrf = document.querySelector('meta[name="csrf-token"]');
  var token = csrf ? csrf.getAttribute("content") : "";

  function refresh(el) {
    fetch(el.getAttribute("data-refresh"), { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (html) { if (html !== null) { el.innerHTML = html; } });
  }
  document.querySelectorAll("[data-refresh]").forEach(function (el) {
    setInterval(function () { refresh(el); }, 10000);
  });

  function show(form, text) {
    var out = form.querySelector("[data-message]");
    if (out) { out.textContent = text; }
  }

  function poll(url, target, form, tries) {
    fetch(url, { credentials: "same-origin" })
      .then(function (r) { return r.json(); })
      .then(function (doc) {
        target.textContent = doc.status;
        target.className = "status " + doc.status;
        var attempts = document.querySelector("[data-attempts]");
        if (attempts && doc.max_attempts) {
          attempts.textContent = "attempt " + doc.attempts + " of " + doc.max_attempts;
        }
        var error = document.querySelector("[data-error]");
        if (error) { error.textContent = doc.last_error || "\u2014"; }
        if (["succeeded", "dead_lettered"].indexOf(doc.status) < 0) {
          if (tries > 0) { setTimeout(function () { poll(url, target, form, tries - 1); }, 500); }
        } else {
          show(form, "Done: " + doc.status.replace("_", " ") + ".");
        }
      });
  }

  document.querySelectorAll("form[data-async]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var button = form.querySelector("button");
      if (button) { button.disabled = true; }
      fetch(form.action, {
        method: "POST", credentials: "same-origin",
        headers: { "X-CSRF-Token": token, "Accept": "application/json" },
        body: new URLSearchParams(new FormData(form))
      }).then(function (r) { return r.json().then(function (doc) { return [r.ok, doc]; }); })
        .then(function (result) {
          show(form, result[1].message);
          var target = document.querySelector("[data-status]");
          if (result[0] && form.getAttribute("data-poll") && target) {
            target.textContent = result[1].status;
            poll(form.getAttribute("data-poll"), target, form, 120);
          } else if (button) { button.disabled = false; }
        });
    });
  });
})();
