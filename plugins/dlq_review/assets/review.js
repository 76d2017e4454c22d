// The review page's little script: tick every row at once, and leave Airflow's frame
// for Airflow's own pages (the frame is sandboxed without top navigation).
"use strict";
document.addEventListener("DOMContentLoaded", () => {
  const filters = document.getElementById("filters");
  if (filters) {
    // Leave empty filters out of the address: it stays short enough to read and share.
    filters.addEventListener("submit", () => {
      filters.querySelectorAll("input, select").forEach((el) => {
        if (!el.value) el.disabled = true;
      });
    });
    // Back to this page from the browser's cache: every field usable again.
    window.addEventListener("pageshow", () => {
      filters.querySelectorAll("[disabled]").forEach((el) => { el.disabled = false; });
    });
  }
  const all = document.getElementById("all");
  if (all) {
    all.addEventListener("change", () => {
      document.querySelectorAll("input.pick").forEach((box) => { box.checked = all.checked; });
    });
  }
  document.querySelectorAll("a[data-airflow-link]").forEach((link) => {
    link.addEventListener("click", (event) => {
      if (window.top === window) return; // opened directly: the link works as it is
      try {
        // Same origin: ask the Airflow UI (a single-page app) to show its own page.
        window.top.history.pushState({}, "", link.getAttribute("href"));
        window.top.dispatchEvent(new PopStateEvent("popstate", { state: {} }));
        event.preventDefault();
      } catch (err) {
        // Keep the browser's own handling.
      }
    });
  });
});
