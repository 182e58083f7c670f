// scimrelay console: copy buttons, the progress of running jobs, the live
// tail. Every page works without it; the CSP allows no inline script, so
// this file is all there is.
"use strict";

(function () {
  // Copy buttons: shown only where a script can copy.
  document.querySelectorAll("button[data-copy]").forEach(function (button) {
    var input = document.getElementById(button.dataset.copy);
    if (!input) {
      return;
    }
    var label = button.innerHTML;
    button.hidden = false;
    button.addEventListener("click", function () {
      var said = function (text) {
        button.textContent = text;
        setTimeout(function () { button.innerHTML = label; }, 2000);
      };
      var fallback = function () {
        input.focus();
        input.select();
        try {
          said(document.execCommand("copy") ? "Copied" : "Press Ctrl+C");
        } catch (e) {
          said("Press Ctrl+C");
        }
      };
      if (navigator.clipboard && window.isSecureContext) {
        navigator.clipboard.writeText(input.value).then(function () { said("Copied"); }, fallback);
      } else {
        fallback();
      }
    });
  });

  // A secret shown once stays shown once: leaving its page empties its
  // fields, so that the back/forward cache keeps no copy, and a page
  // restored from that cache anyway is asked for again, which answers 410.
  var once = document.querySelector("[data-shown-once]");
  if (once) {
    window.addEventListener("pagehide", function () {
      once.querySelectorAll("input").forEach(function (input) {
        input.value = "";
        input.removeAttribute("value");
      });
    });
    window.addEventListener("pageshow", function (e) {
      if (e.persisted) {
        window.location.replace(window.location.href);
      }
    });
  }

  // A form is sent once: a second click before its answer came (a slow
  // link, a double click) sent it again, and a token issued twice left one
  // live whose secret nobody was shown. A page the back/forward cache
  // brings back may send it again.
  document.querySelectorAll('form[method="post"]').forEach(function (form) {
    form.addEventListener("submit", function (e) {
      if (form.dataset.sent) {
        e.preventDefault();
        return;
      }
      form.dataset.sent = "1";
    });
  });
  window.addEventListener("pageshow", function () {
    document.querySelectorAll("form[data-sent]").forEach(function (form) {
      delete form.dataset.sent;
    });
  });

  // A running job's page follows it: the region is fetched again and
  // replaced until the job ends.
  var refresh = function (region) {
    if (!region || region.dataset.state !== "running") {
      return;
    }
    setTimeout(function () {
      fetch(window.location.href, { credentials: "same-origin", headers: { Accept: "text/html" } })
        .then(function (res) { return res.ok ? res.text() : Promise.reject(res.status); })
        .then(function (html) {
          var next = new DOMParser().parseFromString(html, "text/html").getElementById(region.id);
          if (next) {
            region.replaceWith(next);
            refresh(next);
          }
        })
        .catch(function () { refresh(region); });
    }, Number(region.dataset.refresh) || 1000);
  };
  refresh(document.querySelector("[data-refresh]"));

  // The live tail: server-sent events, each a CloudEvent, newest on top.
  var tail = document.getElementById("tail");
  var status = document.getElementById("tail-status");
  if (!tail || !window.EventSource) {
    return;
  }
  var shown = 0;
  var keep = 200;
  // The ids of the events shown lately: after a reconnection the stream
  // starts again a little before where it was, and sends some again.
  var seen = new Set();
  var seenOrder = [];
  var say = function (text) { status.textContent = text; };
  say("Connecting…");
  var source = new EventSource(tail.dataset.stream);
  source.addEventListener("ready", function () { say("Watching: new events appear at the top."); });
  source.addEventListener("cloudevent", function (message) {
    var e;
    try {
      e = JSON.parse(message.data);
    } catch (err) {
      return;
    }
    if (e.id) {
      if (seen.has(e.id)) {
        return;
      }
      seen.add(e.id);
      seenOrder.push(e.id);
      if (seenOrder.length > 10 * keep) {
        seen.delete(seenOrder.shift());
      }
    }
    var item = document.createElement("li");
    var details = document.createElement("details");
    var summary = document.createElement("summary");
    [e.time || "", (e.type || "").replace(/^io\.scimrelay\./, ""), e.subject || "", e.tenant || ""].forEach(function (text, i) {
      var part = document.createElement(i === 1 ? "code" : "span");
      part.textContent = text;
      summary.appendChild(part);
    });
    var pre = document.createElement("pre");
    // Bidirectional control characters (a right-to-left override in a
    // userName) as their \u escapes: the same JSON, shown as it is.
    pre.textContent = JSON.stringify(e, null, 2).replace(/[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g, function (c) {
      return "\\u" + ("000" + c.charCodeAt(0).toString(16)).slice(-4);
    });
    details.appendChild(summary);
    details.appendChild(pre);
    item.appendChild(details);
    item.className = "event";
    item.dataset.type = e.type || "";
    tail.insertBefore(item, tail.firstChild);
    shown++;
    while (tail.children.length > keep) {
      tail.removeChild(tail.lastChild);
    }
    say("Watching: " + shown + " event" + (shown === 1 ? "" : "s") + " so far.");
  });
  source.addEventListener("failure", function (message) {
    source.close();
    var why = "";
    try {
      why = JSON.parse(message.data).error;
    } catch (err) {
      why = message.data;
    }
    say("The tail stopped: " + why);
  });
  source.addEventListener("signed-out", function () {
    source.close();
    window.location.assign("/ui/login");
  });
  source.onerror = function () {
    if (source.readyState === EventSource.CLOSED) {
      say("The tail stopped. Reload the page to start again.");
    } else {
      say("Reconnecting…");
    }
  };
})();
