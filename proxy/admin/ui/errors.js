// Loaded first, as a classic script: keeps every uncaught error, rejected promise, console.error
// and Content-Security-Policy violation in window.__errors, so the browser test (or a person at the
// console) can see that the page ran clean.
(function () {
  var errors = [];
  window.__errors = errors;
  window.addEventListener("error", function (e) {
    errors.push("error: " + (e.message || (e.target && e.target.src) || String(e)));
  }, true);
  window.addEventListener("unhandledrejection", function (e) {
    errors.push("unhandled rejection: " + String(e.reason));
  });
  document.addEventListener("securitypolicyviolation", function (e) {
    errors.push("content security policy: " + e.violatedDirective + " " + e.blockedURI);
  });
  var original = console.error;
  console.error = function () {
    errors.push("console.error: " + Array.prototype.map.call(arguments, String).join(" "));
    return original.apply(console, arguments);
  };
})();
