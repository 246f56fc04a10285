// The metrics page's log tail: the console's SSE stream of log lines into a bounded list.
// A file of its own because the page's policy allows no inline script.
(function () {
  "use strict";
  var MAX_SHOWN = 500; // as many as the host's ring keeps
  var list = document.getElementById("log-lines");
  var state = document.getElementById("log-state");
  if (!list || !state || !window.EventSource) { return; }
  var source = new EventSource(list.getAttribute("data-src"));
  source.onopen = function () { state.textContent = "Live."; };
  source.onmessage = function (event) {
    var item = document.createElement("li");
    item.textContent = event.data; // text, never markup
    list.appendChild(item);
    while (list.childElementCount > MAX_SHOWN) { list.removeChild(list.firstElementChild); }
    list.scrollTop = list.scrollHeight;
  };
  source.addEventListener("end", function (event) {
    state.textContent = event.data;
    source.close();
  });
  source.onerror = function () {
    // A refusal (signed out, too many tails) or a lost connection: do not retry for ever.
    state.textContent = "The log tail is closed; reload the page to open it again.";
    source.close();
  };
}());
