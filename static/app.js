// Progressive enhancement only: the form posts and works without this file.
(function () {
  "use strict";

  // Counts as the server writes them (its "number" filter): 3000 -> "3,000".
  function number(value) {
    return String(value).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  // Text about what only works with this file (dragging, pasting, the crop box) shows only with it.
  Array.prototype.forEach.call(document.querySelectorAll(".needs-js"), function (el) { el.hidden = false; });

  function setupUpload() {
    var form = document.getElementById("search-form");
    var input = document.getElementById("image");
    var zone = document.getElementById("dropzone");
    var previews = document.getElementById("previews");
    if (!form || !input || !zone || !previews) return;
    var maxFiles = parseInt(zone.getAttribute("data-max-files"), 10) || 4;

    var cropFields = document.getElementById("crop-fields");

    function showPreviews(boxes) {
      previews.textContent = "";
      if (cropFields) cropFields.textContent = "";
      var files = Array.prototype.slice.call(input.files || []);
      // "All files" in the picker lets a text file through: say so before the upload
      var notImages = files.filter(function (f) { return !(f.type && f.type.indexOf("image/") === 0); });
      input.setCustomValidity(notImages.length ? notImages[0].name +
        " is not a photo. Choose JPEG, PNG, WebP, GIF, BMP or TIFF files." : "");
      var trimmed = files.length > maxFiles && typeof DataTransfer !== "undefined";
      if (trimmed) {
        // Keep what the server accepts instead of letting the search fail.
        var keep = new DataTransfer();
        files.slice(0, maxFiles).forEach(function (f) { keep.items.add(f); });
        input.files = keep.files;
      }
      files.slice(0, maxFiles).forEach(function (file, index) {
        var li = document.createElement("li");
        // one crop field per photo, in upload order; empty means the whole photo
        var field = document.createElement("input");
        field.type = "hidden";
        field.name = "crop";
        field.value = "";
        if (cropFields) cropFields.appendChild(field);
        if (file.type && file.type.indexOf("image/") === 0) {
          var img = document.createElement("img");
          img.alt = "Preview of " + file.name;
          img.src = URL.createObjectURL(file);
          img.onload = function () {
            URL.revokeObjectURL(img.src);
            if (li.className === "croppable") fitToWidth(img, li);
          };
          // a file the browser cannot draw (TIFF, or not a photo at all): a note, not a broken image
          img.onerror = function () {
            URL.revokeObjectURL(img.src);
            li.className = "no-preview";
            li.textContent = "";
            var note = document.createElement("span");
            note.className = "preview-note";
            note.textContent = "No preview for " + file.name + ": this browser cannot show it. " +
              "The search will say whether it can be used.";
            li.appendChild(note);
            field.value = "";
          };
          if (cropFields) {
            li.className = "croppable";
            var editor = cropEditor(img, field, file.name, index);
            // a results page hands back the box each photo was searched with
            if (boxes && boxes[index]) editor.setCrop(boxes[index]);
            li.appendChild(editor);
          } else {
            li.appendChild(img);
          }
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
      if (!boxes) stashPhotos(files.slice(0, maxFiles));
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

    input.addEventListener("change", function () { showPreviews(); });
    restorePhotos(input, showPreviews);
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

  // ---------------------------------------------------------------- photos kept for the results page
  // The server keeps no upload. So that the results page can offer the same
  // photos again with the box each was searched with drawn in the crop tool,
  // the browser keeps a copy for this tab (sessionStorage): the file itself
  // when small, else a JPEG of at most STASH_SIDE pixels. Anything that fails
  // (no storage, quota) only means the form on the results page starts empty.
  var STASH_KEY = "fashion-search.photos";
  var STASH_BYTES = 1500000, STASH_SIDE = 1600;

  function readAsDataURL(blob) {
    return new Promise(function (resolve, reject) {
      var reader = new FileReader();
      reader.onload = function () { resolve(reader.result); };
      reader.onerror = reject;
      reader.readAsDataURL(blob);
    });
  }

  function shrunk(file) {
    if (file.size <= STASH_BYTES) return readAsDataURL(file);
    return createImageBitmap(file).then(function (bitmap) {
      var scale = Math.min(1, STASH_SIDE / Math.max(bitmap.width, bitmap.height));
      var canvas = document.createElement("canvas");
      canvas.width = Math.max(1, Math.round(bitmap.width * scale));
      canvas.height = Math.max(1, Math.round(bitmap.height * scale));
      canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
      return canvas.toDataURL("image/jpeg", 0.92);
    });
  }

  function stashPhotos(files) {
    try { sessionStorage.removeItem(STASH_KEY); } catch (e) { return; }
    var images = files.filter(function (f) { return f.type && f.type.indexOf("image/") === 0; });
    if (!images.length || images.length !== files.length) return;
    Promise.all(images.map(shrunk)).then(function (urls) {
      var kept = images.map(function (f, i) { return { name: f.name, url: urls[i] }; });
      try { sessionStorage.setItem(STASH_KEY, JSON.stringify(kept)); } catch (e) { /* too big: not kept */ }
    }).catch(function () { /* a photo the browser cannot read: not kept */ });
  }

  function fileFromDataURL(url, name) {
    var parts = url.split(","), type = parts[0].replace(/^data:([^;]*);base64$/, "$1") || "image/jpeg";
    var bytes = atob(parts[1]), array = new Uint8Array(bytes.length);
    for (var i = 0; i < bytes.length; i++) array[i] = bytes.charCodeAt(i);
    return new File([array], name, { type: type });
  }

  // On a results page: the same photos in the "search again" form, each with its box drawn.
  function restorePhotos(input, showPreviews) {
    var holder = document.getElementById("found-boxes");
    if (!holder || typeof DataTransfer === "undefined") return;
    var boxes, kept;
    try {
      boxes = JSON.parse(holder.getAttribute("data-boxes") || "[]");
      kept = JSON.parse(sessionStorage.getItem(STASH_KEY) || "[]");
    } catch (e) { return; }
    if (!kept.length || kept.length !== boxes.length) return;
    var transfer = new DataTransfer();
    kept.forEach(function (photo) { transfer.items.add(fileFromDataURL(photo.url, photo.name)); });
    input.files = transfer.files;
    showPreviews(boxes.map(function (text) {
      var v = String(text || "").split(",").map(Number);
      return v.length === 4 && v.every(isFinite) ? { x: v[0], y: v[1], w: v[2], h: v[3] } : null;
    }));
  }

  // ---------------------------------------------------------------- crop box
  // The box is kept as fractions of the photo (x, y, w, h), which is what the
  // server's crop field takes, so the size the preview is shown at never matters.
  var STEP = 0.05;  // keyboard: one arrow press moves or resizes by 5% of the photo
  var MIN = 0.05;   // the smallest box, as a fraction of each side
  var TAP = 0.02;   // a press that moves less than 2% of the photo each way is a tap, not a drag
  var CORNERS = ["nw", "ne", "sw", "se"];  // the box's resize handles
  // Below two finger-sized (44 px) handles across, handles centred on the corners would cover the
  // middle of the box; style.css then puts their targets outside it (.is-small).
  var SMALL_BOX_PX = 88;

  // Show the photo as large as its list item allows (and at most 60% of the
  // window's height), so a small photo is not drawn on at thumbnail size.
  function fitToWidth(img, li) {
    // less the crop area's margins, which leave room for the corner handles outside the photo
    var area = img.closest(".crop-area"), style = area ? window.getComputedStyle(area) : null;
    var room = style ? parseFloat(style.marginLeft) + parseFloat(style.marginRight) : 0;
    var width = li.clientWidth - room, height = window.innerHeight * 0.6;
    if (!img.naturalWidth || !img.naturalHeight || !width) return;
    var scale = Math.min(width / img.naturalWidth, height / img.naturalHeight);
    img.style.width = Math.round(img.naturalWidth * scale) + "px";  // height follows; max-width caps it on resize
  }

  function clamp(value, low, high) { return Math.min(high, Math.max(low, value)); }
  function round4(value) { return Math.round(value * 10000) / 10000; }

  function cropEditor(img, field, name, index) {
    var wrap = document.createElement("div");
    wrap.className = "crop-editor";
    var area = document.createElement("div");
    area.className = "crop-area";
    // the photo and the shade that dims it outside the box are clipped to the photo;
    // the box and its corner handles are not, so a handle on the photo's edge stays whole
    var frame = document.createElement("div");
    frame.className = "crop-frame";
    frame.appendChild(img);
    var shade = document.createElement("div");
    shade.className = "crop-shade";
    frame.appendChild(shade);
    area.appendChild(frame);
    var box = document.createElement("div");
    box.className = "crop-box";
    box.tabIndex = 0;
    box.id = "crop-box-" + (index + 1);
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "Search area of " + name +
      ". Drag on the photo to draw it, drag inside it to move it, drag a corner to resize it," +
      " or tap the photo to move it there; arrow keys move it, Shift with arrow keys resizes it.");
    CORNERS.forEach(function (corner) {
      // pointer targets only: the keyboard resizes the box itself (Shift+arrows)
      var handle = document.createElement("span");
      handle.className = "crop-handle crop-handle-" + corner;
      handle.setAttribute("data-corner", corner);
      handle.setAttribute("aria-hidden", "true");
      box.appendChild(handle);
    });
    area.appendChild(box);
    var status = document.createElement("p");
    status.className = "crop-status";
    status.setAttribute("aria-live", "polite");
    // Sizing without a drag (WCAG 2.5.7), with a tap on the photo to place the box.
    function button(className, text) {
      var el = document.createElement("button");
      el.type = "button";
      el.className = "crop-button " + className;
      el.textContent = text;
      return el;
    }
    var smaller = button("crop-smaller", "Smaller box");
    var larger = button("crop-larger", "Larger box");
    var reset = button("crop-reset", "Use the whole photo");
    var actions = document.createElement("div");
    actions.className = "crop-actions";
    [smaller, larger, reset].forEach(function (el) { actions.appendChild(el); });
    wrap.appendChild(area);
    wrap.appendChild(status);
    wrap.appendChild(actions);

    var crop = { x: 0, y: 0, w: 1, h: 1 };

    function render() {
      [box, shade].forEach(function (el) {
        el.style.left = (crop.x * 100) + "%";
        el.style.top = (crop.y * 100) + "%";
        el.style.width = (crop.w * 100) + "%";
        el.style.height = (crop.h * 100) + "%";
      });
      var whole = crop.x <= 0 && crop.y <= 0 && crop.w >= 1 && crop.h >= 1;
      field.value = whole ? "" : [crop.x, crop.y, crop.w, crop.h].map(round4).join(",");
      area.classList.toggle("is-cropped", !whole);
      reset.hidden = whole;
      status.textContent = whole
        ? "Searching with the whole photo. Drag on it, or use Smaller box, to search for one item."
        : "Searching with the marked area (" + Math.round(crop.w * 100) + "% x " + Math.round(crop.h * 100) + "% of the photo).";
      fitHandles();
    }

    // Whether the box is too small for handles on its corners: on every change, and again when the
    // photo is shown at another size (a turned phone, a resized window).
    function fitHandles() {
      box.classList.toggle("is-small", Math.min(box.offsetWidth, box.offsetHeight) < SMALL_BOX_PX);
    }
    if (typeof ResizeObserver !== "undefined") new ResizeObserver(fitHandles).observe(box);

    function set(x, y, w, h) {
      w = clamp(round4(w), MIN, 1);
      h = clamp(round4(h), MIN, 1);
      crop = { x: clamp(round4(x), 0, round4(1 - w)), y: clamp(round4(y), 0, round4(1 - h)), w: w, h: h };
      render();
    }

    // Grow or shrink by `by` of the photo on each side, about the box's middle.
    function grow(by) {
      var w = clamp(crop.w + 2 * by, MIN, 1), h = clamp(crop.h + 2 * by, MIN, 1);
      set(crop.x + (crop.w - w) / 2, crop.y + (crop.h - h) / 2, w, h);
    }

    // One side of a box drawn or resized between a fixed edge and the pointer: at least MIN
    // long and never past the fixed edge, on the pointer's side of it while the photo has room.
    function span(fixed, to) {
      var low = to < fixed;
      if (low && fixed - MIN < 0) low = false;
      else if (!low && fixed + MIN > 1) low = true;
      var start = low ? Math.min(to, fixed - MIN) : fixed;
      return { start: start, size: low ? fixed - start : Math.max(to, fixed + MIN) - fixed };
    }

    function point(event) {
      var rect = img.getBoundingClientRect();
      return {
        x: clamp((event.clientX - rect.left) / rect.width, 0, 1),
        y: clamp((event.clientY - rect.top) / rect.height, 0, 1)
      };
    }

    // One drag at a time, with one of three meanings: a corner handle resizes the
    // box against the opposite corner, a press inside a marked box moves it, and
    // a press anywhere else draws a new box from there (a tap there moves the box).
    var drag = null;
    area.addEventListener("pointerdown", function (event) {
      if (drag || (event.button !== undefined && event.button !== 0)) return;
      event.preventDefault();
      var at = point(event);
      var from = { x: crop.x, y: crop.y, w: crop.w, h: crop.h };
      var next;
      var handle = event.target.closest ? event.target.closest(".crop-handle") : null;
      if (handle) {
        var corner = handle.getAttribute("data-corner");
        var west = corner.charAt(1) === "w", north = corner.charAt(0) === "n";
        // the corner that stays put, and the one that follows the pointer
        next = { mode: "resize",
                 anchor: { x: west ? from.x + from.w : from.x, y: north ? from.y + from.h : from.y },
                 corner: { x: west ? from.x : from.x + from.w, y: north ? from.y : from.y + from.h } };
      } else if (event.target === box && area.classList.contains("is-cropped")) {
        next = { mode: "move" };
      } else {
        next = { mode: "draw", anchor: at };
      }
      // Without the capture no pointerup may come; a drag begun then would never end.
      try { area.setPointerCapture(event.pointerId); } catch (e) { return; }
      next.start = next.last = at;
      next.from = from;
      next.pointer = event.pointerId;
      drag = next;
      area.classList.add("pointer-focus");
      box.focus({ preventScroll: true });
    });
    area.addEventListener("pointermove", function (event) {
      if (!drag || event.pointerId !== drag.pointer) return;
      var at = drag.last = point(event);
      var dx = at.x - drag.start.x, dy = at.y - drag.start.y;
      if (drag.mode === "move") {
        set(drag.from.x + dx, drag.from.y + dy, drag.from.w, drag.from.h);
        return;
      }
      // a handle keeps where on it it was pressed: its corner moves as far as the pointer
      var to = drag.mode === "resize" ? { x: clamp(drag.corner.x + dx, 0, 1), y: clamp(drag.corner.y + dy, 0, 1) } : at;
      var across = span(drag.anchor.x, to.x), down = span(drag.anchor.y, to.y);
      set(across.start, down.start, across.size, down.size);
    });
    // Only a press on the photo outside the box can be a tap: a short drag of a handle or of the box is meant.
    function endDrag(at, released) {
      var from = drag.from;
      var tap = drag.mode === "draw" && Math.abs(at.x - drag.start.x) < TAP && Math.abs(at.y - drag.start.y) < TAP;
      var whole = from.x <= 0 && from.y <= 0 && from.w >= 1 && from.h >= 1;
      drag = null;
      if (!tap) return;
      // a tap draws no box: it moves a marked one there (no drag needed), or keeps the whole photo
      if (released && !whole) set(at.x - from.w / 2, at.y - from.h / 2, from.w, from.h);
      else set(from.x, from.y, from.w, from.h);
    }
    area.addEventListener("pointerup", function (event) {
      if (drag && event.pointerId === drag.pointer) endDrag(point(event), true);
    });
    // the browser took the pointer away without a pointerup: the drag ends where it was
    area.addEventListener("lostpointercapture", function (event) {
      if (drag && event.pointerId === drag.pointer) endDrag(drag.last, false);
    });
    // the browser cancelled the drag: the box it began with comes back
    area.addEventListener("pointercancel", function (event) {
      if (!drag || event.pointerId !== drag.pointer) return;
      var from = drag.from;
      drag = null;
      set(from.x, from.y, from.w, from.h);
    });

    // The focus ring is for the keyboard: a box focused by a finger or the mouse shows it at the first key.
    box.addEventListener("blur", function () { area.classList.remove("pointer-focus"); });
    box.addEventListener("keydown", function (event) {
      area.classList.remove("pointer-focus");
      var dx = 0, dy = 0;
      if (event.key === "ArrowLeft") dx = -STEP;
      else if (event.key === "ArrowRight") dx = STEP;
      else if (event.key === "ArrowUp") dy = -STEP;
      else if (event.key === "ArrowDown") dy = STEP;
      else if (event.key === "Escape") { set(0, 0, 1, 1); return; }
      else return;
      event.preventDefault();
      if (event.shiftKey) set(crop.x, crop.y, crop.w + dx, crop.h + dy);
      else set(crop.x + dx, crop.y + dy, crop.w, crop.h);
    });
    reset.addEventListener("click", function () { set(0, 0, 1, 1); box.focus(); });
    smaller.addEventListener("click", function () { grow(-STEP); });
    larger.addEventListener("click", function () { grow(STEP); });

    render();
    wrap.setCrop = function (b) { set(b.x, b.y, b.w, b.h); };
    return wrap;
  }

  // Faceted filters: after a change, each list shows only the values that
  // still match under the other choices, with counts (GET /api/facets).
  function setupFacets() {
    Array.prototype.forEach.call(document.querySelectorAll("form[data-facets-url]"), function (form) {
      var url = form.getAttribute("data-facets-url");
      var selects = Array.prototype.slice.call(form.querySelectorAll("select.facet"));
      function refresh() {
        var params = new URLSearchParams();
        selects.forEach(function (s) { if (s.value) params.append(s.getAttribute("data-field"), s.value); });
        fetch(url + "?" + params.toString(), { headers: { "Accept": "application/json" } })
          .then(function (r) { return r.ok ? r.json() : null; })
          .then(function (data) {
            if (!data) return;
            selects.forEach(function (select) {
              var values = data.facets[select.getAttribute("data-field")] || [];
              var current = select.value;
              select.textContent = "";
              var any = document.createElement("option");
              any.value = "";
              any.textContent = "Any";
              select.appendChild(any);
              values.forEach(function (entry) {
                var option = document.createElement("option");
                option.value = entry.value;
                option.textContent = entry.value + " (" + number(entry.count) + ")";
                if (entry.value === current) option.selected = true;
                select.appendChild(option);
              });
            });
            form.setAttribute("data-matched", data.matched);
          })
          .catch(function () { /* the lists stay as the server drew them */ });
      }
      selects.forEach(function (s) { s.addEventListener("change", refresh); });
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
            text.textContent = number(status.done) + " of " + number(status.total) + " photos" + eta + ".";
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
    setupFacets();
    setupBuilding();
  });
})();
