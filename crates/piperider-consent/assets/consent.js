// PipeRider Cloud consent banner and telemetry. Served by piperider-ingest
// at /consent.js after the generated list of event types.
//
// The server decides: at load the script asks GET /v1/consent, which reads
// the signed cookie (a hand-made or edited cookie reads as pending). While
// the state is pending or denied the script sends nothing to the telemetry
// endpoint and keeps nothing in the browser for telemetry. With Accept All
// it keeps the visitor id the server named in localStorage and sends page
// views and the actions the page marks with data-track; withdrawing makes
// the server delete that visitor's events.
(function () {
  "use strict";
  var VISITOR_KEY = "piperider_visitor_id";
  var state = "pending";
  // Whether the server saw this browser's Global Privacy Control signal.
  var gpcHonoured = false;

  function send(method, url, body) {
    return fetch(url, {
      method: method,
      credentials: "same-origin",
      // Let an event sent as a link or form navigates away still arrive.
      keepalive: method === "POST",
      headers: body ? { "content-type": "application/json" } : {},
      body: body ? JSON.stringify(body) : undefined,
    });
  }

  // The visitor id is the one the server's Accept All named (its answer's
  // visitor_id), the only one it stores events for and the one whose events
  // it deletes on withdrawal. A cookie from before ids were named has none:
  // then one is made here, as before.
  function visitorId() {
    var id = window.localStorage.getItem(VISITOR_KEY);
    if (!id) {
      id = crypto.randomUUID().replace(/-/g, "");
      window.localStorage.setItem(VISITOR_KEY, id);
    }
    return id;
  }

  function adopt(answer) {
    state = answer.state;
    gpcHonoured = answer.gpc === true;
    if (state === "granted" && answer.visitor_id) {
      window.localStorage.setItem(VISITOR_KEY, answer.visitor_id);
    }
  }

  function forgetTelemetry() {
    window.localStorage.removeItem(VISITOR_KEY);
  }

  function route() {
    return document.body.getAttribute("data-route") || "/";
  }

  function track(type, extra) {
    if (state !== "granted") return;
    if (PIPERIDER_CLOUD_EVENT_TYPES.indexOf(type) < 0) return;
    var event = {
      schema_version: 1,
      event_id: crypto.randomUUID(),
      event_type: type,
      timestamp: new Date().toISOString(),
      visitor_id: visitorId(),
      route: route(),
    };
    if (extra) {
      for (var k in extra) event[k] = extra[k];
    }
    send("POST", "/v1/cloud/events", event);
  }

  function banner(source) {
    var old = document.getElementById("consent-banner");
    if (old) old.remove();
    var box = document.createElement("div");
    box.id = "consent-banner";
    box.setAttribute("role", "dialog");
    box.setAttribute("aria-label", "Cookie choices");
    // The texts are the server's own (their hash is kept with each decision).
    box.innerHTML =
      '<p class="consent-text"></p>' +
      (gpcHonoured ? '<p class="consent-gpc"></p>' : '') +
      '<button type="button" class="consent-choice" data-choice="accept_all">Accept All</button> ' +
      '<button type="button" class="consent-choice" data-choice="necessary_only">Necessary Only</button>';
    box.querySelector("p.consent-text").textContent = CONSENT_BANNER_TEXT;
    if (gpcHonoured) box.querySelector("p.consent-gpc").textContent = CONSENT_GPC_TEXT;
    box.querySelectorAll("button.consent-choice").forEach(function (b) {
      b.addEventListener("click", function () {
        choose(b.getAttribute("data-choice"), source);
      });
    });
    document.body.appendChild(box);
    box.querySelector("button").focus();
  }

  // A decision the server refuses for now (429: a second decision within
  // its interval, or the address over its limit) is sent again after the
  // Retry-After delay, a few times; any other refusal leaves the state and
  // the banner as they were.
  function choose(choice, source, attempt) {
    attempt = attempt || 0;
    send("POST", "/v1/consent", { choice: choice, source: source }).then(function (r) {
      if (r.status === 429 && attempt < 3) {
        var wait = parseInt(r.headers.get("retry-after") || "1", 10) || 1;
        setTimeout(function () {
          choose(choice, source, attempt + 1);
        }, Math.min(wait, 10) * 1000);
        return null;
      }
      return r.ok ? r.json() : null;
    }).then(function (answer) {
      if (!answer) return;
      adopt(answer);
      document.body.setAttribute("data-consent", state);
      var box = document.getElementById("consent-banner");
      if (box) box.remove();
      if (state === "granted") {
        track("page_view");
      } else {
        forgetTelemetry();
      }
    });
  }

  function wire() {
    document.querySelectorAll("[data-track]").forEach(function (el) {
      var type = el.getAttribute("data-track");
      var on = el.tagName === "FORM" ? "submit" : el.tagName === "SELECT" ? "change" : "click";
      el.addEventListener(on, function () {
        if (type === "comparison_sources") {
          var sources = [];
          document.querySelectorAll("select[data-source]").forEach(function (s) {
            sources.push(s.value);
          });
          track(type, { sources: sources });
        } else if (type === "trend_metric_selected") {
          track(type, { metric: el.value });
        } else {
          track(type);
        }
      });
    });
    var settings = document.getElementById("cookie-settings");
    if (settings) {
      settings.addEventListener("click", function (e) {
        e.preventDefault();
        banner("settings");
      });
    }
  }

  window.piperiderTelemetry = { track: track, state: function () { return state; } };

  document.addEventListener("DOMContentLoaded", function () {
    wire();
    send("GET", "/v1/consent").then(function (r) {
      return r.json();
    }).then(function (answer) {
      adopt(answer);
      if (state === "pending") {
        forgetTelemetry();
        banner("banner");
      } else if (state === "granted") {
        track("page_view");
      } else {
        forgetTelemetry();
      }
      document.body.setAttribute("data-consent", state);
    });
  });
})();
