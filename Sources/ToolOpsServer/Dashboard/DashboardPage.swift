/// The cluster dashboard: one static page, no build step, no external assets. Its script polls
/// `/dashboard/data` every 2 s and computes rates from the change in the cluster's call totals.
enum DashboardPage {
    static let html = #"""
        <!doctype html>
        <html lang="en">
        <head>
        <meta charset="utf-8">
        <meta name="viewport" content="width=device-width, initial-scale=1">
        <link rel="icon" href="data:,">
        <title>ToolOps cluster</title>
        <style>
          body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5rem; color: #1d2330; background: #f7f8fa; }
          h1 { font-size: 1.3rem; margin: 0 0 .2rem; }
          h2 { font-size: 1rem; margin: 1.4rem 0 .4rem; }
          table { border-collapse: collapse; background: #fff; min-width: 32rem; }
          th, td { text-align: left; padding: .3rem .7rem; border-bottom: 1px solid #e3e6ea; }
          th { font-weight: 600; background: #eef1f5; }
          .muted { color: #6b7280; }
          .bad { color: #b42318; font-weight: 600; }
          .warn { color: #b54708; font-weight: 600; }
          .good { color: #067647; }
        </style>
        </head>
        <body>
        <h1>ToolOps cluster</h1>
        <div class="muted">updated <span id="updated">never</span> · <span id="error"></span></div>

        <h2>Replicas <span id="replica-count" class="muted"></span></h2>
        <table><thead><tr><th>id</th><th>address</th><th>version</th><th>uptime</th><th>health</th></tr></thead>
        <tbody id="replicas"></tbody></table>

        <h2>Circuit breakers not closed</h2>
        <table><thead><tr><th>breaker</th><th>state</th></tr></thead><tbody id="breakers"></tbody></table>

        <h2>Tools</h2>
        <table><thead><tr><th>tool</th><th>calls/s</th><th>error rate</th><th>cache hit ratio</th><th>calls</th></tr></thead>
        <tbody id="tools"></tbody></table>

        <h2>Cache</h2>
        <div id="cache" class="muted"></div>

        <h2>Degraded</h2>
        <table><thead><tr><th>replica</th><th>check</th><th>status</th></tr></thead><tbody id="degraded"></tbody></table>

        <script>
        "use strict";
        let previous = null;

        function cell(text, cls) {
          const td = document.createElement("td");
          td.textContent = text;
          if (cls) td.className = cls;
          return td;
        }

        function fill(id, rows, empty) {
          const body = document.getElementById(id);
          body.replaceChildren();
          if (rows.length === 0) {
            const tr = document.createElement("tr");
            const td = cell(empty, "muted");
            td.colSpan = 5;
            tr.appendChild(td);
            body.appendChild(tr);
            return;
          }
          for (const cells of rows) {
            const tr = document.createElement("tr");
            for (const c of cells) tr.appendChild(c);
            body.appendChild(tr);
          }
        }

        function uptime(seconds) {
          if (seconds < 120) return seconds + " s";
          if (seconds < 7200) return Math.floor(seconds / 60) + " min";
          return Math.floor(seconds / 3600) + " h " + Math.floor((seconds % 3600) / 60) + " min";
        }

        function totals(outcomes) {
          let calls = 0, errors = 0, cached = 0;
          for (const [outcome, count] of Object.entries(outcomes || {})) {
            calls += count;
            if (outcome === "cached") cached += count;
            else if (outcome !== "ok") errors += count;
          }
          return { calls, errors, cached };
        }

        function render(data) {
          const now = Date.parse(data.readAt) || Date.now();
          document.getElementById("updated").textContent = new Date(now).toLocaleTimeString();
          document.getElementById("error").textContent = "";
          document.getElementById("replica-count").textContent = "(" + data.replicas.length + ")";
          fill("replicas", data.replicas.map(r => [
            cell(r.id), cell(r.host + ":" + r.port), cell(r.version), cell(uptime(r.uptimeSeconds)),
            cell(r.health, r.health === "healthy" ? "good" : r.health === "degraded" ? "warn" : "bad")]), "no live replicas");
          fill("breakers", data.breakers.map(b => [cell(b.name), cell(b.state, b.state === "open" || b.state === "forced_open" ? "bad" : "warn")]),
               "every breaker is closed");

          const rows = [];
          let hits = 0, lookups = 0;
          for (const tool of Object.keys(data.tools).sort()) {
            const t = totals(data.tools[tool]);
            let rate = "–", errorRate = "–";
            if (previous && previous.tools[tool]) {
              const p = totals(previous.tools[tool]);
              const seconds = Math.max(0.001, (now - previous.at) / 1000);
              const calls = Math.max(0, t.calls - p.calls);
              rate = (calls / seconds).toFixed(1);
              errorRate = calls > 0 ? (100 * Math.max(0, t.errors - p.errors) / calls).toFixed(1) + " %" : "0 %";
            }
            hits += t.cached;
            lookups += t.calls;
            const ratio = t.calls > 0 ? (100 * t.cached / t.calls).toFixed(0) + " %" : "–";
            rows.push([cell(tool), cell(rate), cell(errorRate), cell(ratio), cell(String(t.calls))]);
          }
          fill("tools", rows, "no calls yet");
          const overall = lookups > 0 ? (100 * hits / lookups).toFixed(1) + " % of calls answered from the cache" : "no calls yet";
          document.getElementById("cache").textContent =
            data.cache.entries + " entries, " + Math.round(data.cache.bytes / 1024) + " KiB in Redis · " + overall;

          const degraded = [];
          for (const replica of Object.keys(data.degraded).sort()) {
            for (const [check, status] of Object.entries(data.degraded[replica])) {
              degraded.push([cell(replica), cell(check), cell(status, status === "unhealthy" ? "bad" : "warn")]);
            }
          }
          fill("degraded", degraded, "nothing degraded");
          previous = { at: now, tools: data.tools };
          document.body.dataset.ready = "1";
        }

        async function refresh() {
          try {
            const response = await fetch("/dashboard/data", { cache: "no-store" });
            if (!response.ok) throw new Error("HTTP " + response.status);
            render(await response.json());
          } catch (error) {
            document.getElementById("error").textContent = "cannot reach the server: " + error.message;
          }
        }

        refresh();
        setInterval(refresh, 2000);
        </script>
        </body>
        </html>
        """#
}
