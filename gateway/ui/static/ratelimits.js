// Live 429 counts per rule on the rate limits page.
"use strict";

(function () {
  const table = document.getElementById("rules");

  async function tick() {
    const response = await fetch(table.dataset.source, { headers: { Accept: "application/json" } });
    if (!response.ok) return;
    const { limited } = await response.json();
    for (const row of table.querySelectorAll("tr[data-rule]")) {
      row.querySelector("td.limited").textContent = String(Math.round(limited[row.dataset.rule] || 0));
    }
  }

  setInterval(tick, Number(table.dataset.refreshMs));
})();
