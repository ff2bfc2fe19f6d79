// Progressive enhancement only: the form posts and works without this file.
(function () {
  "use strict";

  function setupUpload() {
    var form = document.getElementById("search-form");
    var input = document.getElementById("image");
    var zone = document.getElementById("dropzone");
    var previews = document.getElementById("previews");
    if (!form || !input || !zone || !previews) return;
    var maxFiles = parseInt(zone.getAttribute("data-max-files"), 10) || 4;

    function showPreviews() {
      previews.textContent = "";
      var files = Array.prototype.slice.call(input.files || []);
      var trimmed = files.length > maxFiles && typeof DataTransfer !== "undefined";
      if (trimmed) {
        // Keep what the server accepts instead of letting the search fail.
        var keep = new DataTransfer();
        files.slice(0, maxFiles).forEach(function (f) { keep.items.add(f); });
        input.files = keep.files;
      }
      files.slice(0, maxFiles).forEach(function (file) {
        var li = document.createElement("li");
        if (file.type && file.type.indexOf("image/") === 0) {
          var img = document.createElement("img");
          img.alt = "Preview of " + file.name;
          img.src = URL.createObjectURL(file);
          img.onload = function () { URL.revokeObjectURL(img.src); };
          li.appendChild(img);
        }
        var caption = document.createElement("span");
        caption.textContent = file.name;
        li.appendChild(caption);
        previews.appendChild(li);
      });
      if (trimmed) {
        var warn = document.createElement("li");
        warn.textContent = "Only the first " + maxFiles + " photos are used.";
        previews.appendChild(warn);
      }
    }

    function useFiles(fileList) {
      var images = Array.prototype.filter.call(fileList, function (f) { return f.type.indexOf("image/") === 0; });
      if (!images.length || typeof DataTransfer === "undefined") return false;
      var transfer = new DataTransfer();
      images.slice(0, maxFiles).forEach(function (f) { transfer.items.add(f); });
      input.files = transfer.files;
      showPreviews();
      return true;
    }

    input.addEventListener("change", showPreviews);
    ["dragenter", "dragover"].forEach(function (type) {
      zone.addEventListener(type, function (event) {
        event.preventDefault();
        zone.classList.add("is-dragging");
      });
    });
    ["dragleave", "drop"].forEach(function (type) {
      zone.addEventListener(type, function () { zone.classList.remove("is-dragging"); });
    });
    zone.addEventListener("drop", function (event) {
      event.preventDefault();
      if (event.dataTransfer && event.dataTransfer.files) useFiles(event.dataTransfer.files);
    });
    document.addEventListener("paste", function (event) {
      var data = event.clipboardData;
      if (!data) return;
      var files = [];
      Array.prototype.forEach.call(data.items || [], function (item) {
        if (item.kind === "file") {
          var file = item.getAsFile();
          if (file) files.push(file);
        }
      });
      if (files.length && useFiles(files)) event.preventDefault();
    });
    form.addEventListener("submit", function () {
      var busy = document.getElementById("busy");
      var button = document.getElementById("search-button");
      if (busy) busy.hidden = false;
      if (button) button.disabled = true;
    });
    // Re-enable when the page is restored from the back/forward cache.
    window.addEventListener("pageshow", function () {
      var button = document.getElementById("search-button");
      var busy = document.getElementById("busy");
      if (button) button.disabled = false;
      if (busy) busy.hidden = true;
    });
  }

  function setupBuilding() {
    var section = document.getElementById("building");
    if (!section) return;
    var url = section.getAttribute("data-status-url");
    var home = section.getAttribute("data-home-url");
    var bar = document.getElementById("build-progress");
    var text = document.getElementById("build-text");
    var steps = Array.prototype.slice.call(document.querySelectorAll("#build-steps li"));

    function markSteps(current) {
      var index = steps.map(function (li) { return li.getAttribute("data-step"); }).indexOf(current);
      if (index < 0) return;
      steps.forEach(function (li, i) {
        li.className = i < index ? "done" : (i === index ? "current" : "");
        if (i === index) li.setAttribute("aria-current", "step"); else li.removeAttribute("aria-current");
      });
    }

    function poll() {
      fetch(url, { headers: { "Accept": "application/json" }, cache: "no-store" })
        .then(function (r) { return r.json(); })
        .then(function (status) {
          if (status.state === "ready") { window.location.replace(home); return; }
          if (status.state === "error") { window.location.reload(); return; }
          markSteps(status.step);
          if (status.step === "embedding" && status.total) {
            bar.max = status.total;
            bar.value = status.done;
            var eta = status.eta_s ? ", about " + Math.round(status.eta_s) + " s left" : ", measuring the speed";
            text.textContent = status.done + " of " + status.total + " photos" + eta + ".";
          } else {
            bar.removeAttribute("value");  // an indeterminate bar: this step has no count
            text.textContent = status.message || "Starting…";
          }
          setTimeout(poll, 1000);
        })
        .catch(function () { setTimeout(poll, 3000); });
    }
    poll();
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupUpload();
    setupBuilding();
  });
})();
