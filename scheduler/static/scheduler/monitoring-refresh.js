"use strict";
// Reload the monitoring page every data-refresh-seconds, except while the operator is
// filling one of its forms (a pause and its reason): a reload would throw that away.
(() => {
  const root = document.querySelector("[data-refresh-seconds]");
  if (!root) {
    return;
  }
  const delay = Number(root.dataset.refreshSeconds) * 1000;
  const changed = (field) =>
    field.tagName === "SELECT"
      ? Array.from(field.options).some((option) => option.selected !== option.defaultSelected)
      : field.type !== "hidden" && field.value !== field.defaultValue;
  const filling = () =>
    Boolean(document.activeElement && document.activeElement.form) ||
    Array.from(document.querySelectorAll("form input, form select, form textarea")).some(changed);
  const tick = () => {
    if (filling()) {
      setTimeout(tick, delay);
    } else {
      window.location.reload();
    }
  };
  setTimeout(tick, delay);
})();
