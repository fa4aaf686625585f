// filterwatch dashboard: live updates and PNG downloads. Our own code, no dependencies;
// loaded from the collector (script-src 'self'), no inline script anywhere.
"use strict";

(function () {
  function liveUpdates() {
    var main = document.getElementById("main");
    var url = main && main.getAttribute("data-live-url");
    if (!url) {
      return;
    }
    var every = Math.max(250, parseInt(main.getAttribute("data-poll-ms"), 10) || 15000);
    var status = document.getElementById("live-status");
    var version = null;
    var busy = false;
    var timer = null;

    function say(text) {
      if (status) {
        status.textContent = text;
      }
    }

    function focusKey(el) {
      // What identifies the focused control in the fresh copy of the page.
      if (!el || el === document.body) {
        return null;
      }
      if (el.id) {
        return "#" + CSS.escape(el.id);
      }
      var href = el.getAttribute && el.getAttribute("href");
      return href ? '[href="' + CSS.escape(href) + '"]' : null;
    }

    function refresh() {
      return fetch(location.href, { credentials: "same-origin", cache: "no-store" })
        .then(function (r) {
          if (!r.ok) {
            throw new Error("HTTP " + r.status);
          }
          return r.text();
        })
        .then(function (text) {
          var fresh = new DOMParser().parseFromString(text, "text/html");
          var active = document.activeElement;
          var key = focusKey(active);
          document.querySelectorAll("[data-live]").forEach(function (el) {
            var next = el.id && fresh.getElementById(el.id);
            if (next) {
              var hadFocus = el.contains(active);
              var copy = document.importNode(next, true);
              el.replaceWith(copy);
              if (hadFocus && key) {
                var target = copy.querySelector(key);
                if (target) {
                  target.focus();
                }
              }
            }
          });
          document.dispatchEvent(new CustomEvent("filterwatch:updated"));
        });
    }

    function tick() {
      if (busy) {
        return;
      }
      busy = true;
      fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
        .then(function (r) {
          if (r.status === 401) {
            clearInterval(timer);
            say("Your session ended: reload the page to sign in again.");
            return null;
          }
          if (!r.ok) {
            throw new Error("HTTP " + r.status);
          }
          return r.json();
        })
        .then(function (body) {
          if (!body) {
            return null;
          }
          var changed = version !== null && body.version !== version;
          version = body.version;
          return changed ? refresh() : null;
        })
        .then(function () {
          say("Updates by themselves while this page is open; last checked " +
            new Date().toISOString().slice(11, 19) + " UTC.");
        })
        .catch(function () {
          say("Live updates paused: the collector did not answer. Retrying.");
        })
        .finally(function () {
          busy = false;
        });
    }

    timer = setInterval(tick, every);
    tick();

    // Where the collector keeps the monitor's records, their changes arrive at once over
    // Server-Sent Events; the page then asks (a few times, while the collector's snapshot
    // catches up) whether what it shows changed.
    var stream = main.getAttribute("data-stream-url");
    if (stream && window.EventSource) {
      var source = new EventSource(stream);
      source.addEventListener("change", function () {
        tick();
        setTimeout(tick, 700);
        setTimeout(tick, 2000);
      });
      window.addEventListener("pagehide", function () { source.close(); });
    }
  }

  function download(blob, filename) {
    var link = document.createElement("a");
    link.href = URL.createObjectURL(blob);
    link.download = filename;
    document.body.appendChild(link);
    link.click();
    link.remove();
    setTimeout(function () { URL.revokeObjectURL(link.href); }, 30000);
  }

  // PNG: the server's SVG drawn on a canvas by the browser, so both files show the same.
  function savePng(button) {
    button.disabled = true;
    fetch(button.getAttribute("data-png"), { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) {
          throw new Error("HTTP " + r.status);
        }
        return r.text();
      })
      .then(function (svg) {
        return new Promise(function (resolve, reject) {
          var source = URL.createObjectURL(new Blob([svg], { type: "image/svg+xml" }));
          var img = new Image();
          img.onload = function () {
            var canvas = document.createElement("canvas");
            canvas.width = img.naturalWidth;
            canvas.height = img.naturalHeight;
            var ctx = canvas.getContext("2d");
            ctx.fillStyle = "#ffffff";
            ctx.fillRect(0, 0, canvas.width, canvas.height);
            ctx.drawImage(img, 0, 0);
            URL.revokeObjectURL(source);
            canvas.toBlob(function (png) {
              if (png) {
                resolve(png);
              } else {
                reject(new Error("no PNG"));
              }
            }, "image/png");
          };
          img.onerror = function () {
            URL.revokeObjectURL(source);
            reject(new Error("the chart could not be drawn"));
          };
          img.src = source;
        });
      })
      .then(function (png) {
        download(png, button.getAttribute("data-filename") || "filterwatch-chart.png");
      })
      .catch(function (err) {
        button.title = "PNG failed: " + err.message;
      })
      .finally(function () {
        button.disabled = false;
      });
  }

  document.addEventListener("click", function (ev) {
    var button = ev.target.closest && ev.target.closest("button[data-png]");
    if (button) {
      ev.preventDefault();
      savePng(button);
    }
  });

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", liveUpdates);
  } else {
    liveUpdates();
  }
})();
