"use strict";
// Preselect the operator's own time zone in a fresh scheduling form.
document.addEventListener("DOMContentLoaded", () => {
  const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  for (const select of document.querySelectorAll("select[data-browser-time-zone]")) {
    if (Array.from(select.options).some((option) => option.value === zone)) {
      select.value = zone;
    }
  }
});
