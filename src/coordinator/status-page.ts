/**
 * The status page's HTML, CSS and browser script. They live in a TypeScript
 * module rather than as files next to it because `tsc` copies only .ts output
 * into dist/ (and the Docker images copy only dist/): strings travel with the
 * build, loose assets would not.
 *
 * The script is plain ES2020 for the browser; it is never run by Node. Every
 * string that comes from a worker (its name, host, backend) or from the model
 * (the sample) is inserted with textContent, never as HTML.
 */

export const STATUS_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>dptrain</title>
<link rel="icon" href="data:,">
<link rel="stylesheet" href="/assets/status.css">
<script src="/assets/chart.umd.min.js" defer></script>
<script src="/assets/status.js" defer></script>
</head>
<body>
<header class="top">
  <h1>dptrain</h1>
  <span id="state" class="badge" data-state="connecting">connecting</span>
  <span id="conn" class="conn" hidden>connection lost; retrying</span>
  <span id="model" class="muted"></span>
  <span class="spacer"></span>
  <span id="updated" class="muted"></span>
</header>
<main>
  <section class="cards" aria-label="run state">
    <div class="card"><div class="label">Epoch</div><div class="value" id="epoch">&ndash;</div></div>
    <div class="card"><div class="label">Step</div><div class="value" id="step">&ndash;</div></div>
    <div class="card"><div class="label">Workers</div><div class="value" id="workers-count">&ndash;</div></div>
    <div class="card"><div class="label">Tokens / s</div><div class="value" id="tps">&ndash;</div></div>
    <div class="card"><div class="label">Train perplexity</div><div class="value" id="train-ppl">&ndash;</div></div>
    <div class="card"><div class="label">Validation perplexity</div><div class="value" id="val-ppl">&ndash;</div></div>
    <div class="card"><div class="label">Elapsed</div><div class="value" id="elapsed">&ndash;</div></div>
  </section>
  <div class="progress" title="progress through the epochs"><div id="progress-bar"></div></div>
  <section class="charts">
    <figure class="panel">
      <figcaption>Perplexity <span class="muted">by step</span></figcaption>
      <div class="chart-box"><canvas id="chart-perplexity" role="img" aria-label="train and validation perplexity by step"></canvas></div>
    </figure>
    <figure class="panel">
      <figcaption>Throughput <span class="muted">tokens per second, by step</span></figcaption>
      <div class="chart-box"><canvas id="chart-throughput" role="img" aria-label="tokens per second by step"></canvas></div>
    </figure>
  </section>
  <section class="panel">
    <h2>Workers</h2>
    <div class="table-wrap">
      <table id="workers">
        <thead><tr>
          <th>Name</th><th>Slot</th><th>Backend</th><th>Device</th>
          <th class="num" title="median compute time of the worker's recent rounds (up to 20)">Step time <span class="muted">median</span></th><th class="num" title="compute time of the worker's last round">Last step</th><th class="num">Straggler wait</th><th class="num">Rounds</th><th class="num">Tokens</th><th class="num">Last seen</th>
        </tr></thead>
        <tbody></tbody>
      </table>
    </div>
    <p id="no-workers" class="muted">No worker connected.</p>
  </section>
  <section class="panel">
    <h2>Latest sample <span id="sample-how" class="muted"></span></h2>
    <pre id="sample" class="sample"><span class="muted">No sample yet: one is generated every --sample-every epochs.</span></pre>
  </section>
</main>
</body>
</html>
`;

export const STATUS_CSS = `:root {
  --bg: #f5f6f8; --panel: #fff; --text: #1d2330; --muted: #6b7385; --line: #e3e6ec;
  --blue: #2f6fdb; --orange: #e07a1f; --green: #1f9d55; --amber: #c98a00; --red: #d64545; --grey: #8a92a3;
}
* { box-sizing: border-box; }
body { margin: 0; background: var(--bg); color: var(--text); font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
.top { display: flex; align-items: center; gap: 12px; padding: 12px 24px; background: var(--panel); border-bottom: 1px solid var(--line); }
.top h1 { margin: 0; font-size: 18px; font-weight: 650; letter-spacing: .2px; }
.spacer { flex: 1; }
.muted { color: var(--muted); font-weight: normal; }
.badge { padding: 2px 10px; border-radius: 999px; font-size: 12px; font-weight: 600; text-transform: uppercase; letter-spacing: .4px; color: #fff; background: var(--grey); }
.badge[data-state="training"] { background: var(--green); }
.badge[data-state="paused"], .badge[data-state="waiting"] { background: var(--amber); }
.badge[data-state="stopping"] { background: var(--orange); }
.badge[data-state="done"] { background: var(--blue); }
.conn { color: var(--red); font-weight: 600; }
main { max-width: 1400px; margin: 0 auto; padding: 16px 24px 32px; }
.cards { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .label { color: var(--muted); font-size: 12px; }
.card .value { font-size: 22px; font-weight: 600; font-variant-numeric: tabular-nums; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.card .value .of { font-size: 14px; font-weight: 500; color: var(--muted); }
.progress { height: 4px; margin: 12px 0 4px; background: var(--line); border-radius: 2px; overflow: hidden; }
#progress-bar { height: 100%; width: 0; background: var(--blue); transition: width .4s ease; }
.charts { display: grid; grid-template-columns: repeat(auto-fit, minmax(420px, 1fr)); gap: 12px; }
.panel { background: var(--panel); border: 1px solid var(--line); border-radius: 8px; padding: 12px 16px; margin: 12px 0 0; min-width: 0; }
.panel h2, .panel figcaption { margin: 0 0 8px; font-size: 14px; font-weight: 600; }
.chart-box { position: relative; height: 280px; }
.table-wrap { overflow-x: auto; }
table { width: 100%; border-collapse: collapse; font-variant-numeric: tabular-nums; }
th, td { padding: 6px 10px; text-align: left; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { color: var(--muted); font-size: 12px; font-weight: 600; }
tbody tr:last-child td { border-bottom: none; }
td.name { max-width: 320px; overflow: hidden; text-overflow: ellipsis; font-weight: 500; }
.num { text-align: right; }
.stale { color: var(--red); }
.slow { color: var(--amber); }
.sample { margin: 0; padding: 10px 12px; background: #f8f9fb; border: 1px solid var(--line); border-radius: 6px; font: 13px/1.5 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; white-space: pre-wrap; word-break: break-word; }
.sample .prefix { font-weight: 700; color: var(--blue); }
#no-workers { margin: 8px 0 0; }
`;

export const STATUS_JS = `(function () {
  'use strict';
  var POLL_MS = 1000;
  var COLORS = { blue: '#2f6fdb', orange: '#e07a1f', green: '#1f9d55' };
  var byId = function (id) { return document.getElementById(id); };

  // Kept points arrive incrementally (?since=); a new generation means the server thinned them: start over.
  var series = { generation: -1, points: [], latest: null };
  var runStartedAt = null;
  var charts = null;
  var lastOk = 0;

  function fmtInt(n) { return Number.isFinite(n) ? Math.round(n).toLocaleString('en-US') : '\\u2013'; }
  function fmtNum(n, digits) { return Number.isFinite(n) ? n.toFixed(digits) : '\\u2013'; }
  function fmtMs(ms) {
    if (!Number.isFinite(ms)) return '\\u2013';
    return ms >= 1000 ? (ms / 1000).toFixed(2) + ' s' : ms >= 10 ? ms.toFixed(0) + ' ms' : ms.toFixed(1) + ' ms';
  }
  function fmtDuration(ms) {
    if (!Number.isFinite(ms) || ms < 0) return '\\u2013';
    var s = Math.floor(ms / 1000), h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60);
    s = s % 60;
    var pad = function (x) { return (x < 10 ? '0' : '') + x; };
    return h > 0 ? h + 'h ' + pad(m) + 'm ' + pad(s) + 's' : m > 0 ? m + 'm ' + pad(s) + 's' : s + 's';
  }
  function setText(id, text) {
    var el = byId(id);
    if (el.textContent !== text) el.textContent = text;
  }

  // A value with a smaller, muted suffix ("5 / 100,000") so long totals still fit the card.
  function setParts(id, main, suffix) {
    var el = byId(id);
    if (el.textContent === main + suffix) return;
    var small = document.createElement('span');
    small.className = 'of';
    small.textContent = suffix;
    el.replaceChildren(document.createTextNode(main), small);
  }

  function makeChart(id, datasets, yTitle) {
    return new window.Chart(byId(id), {
      type: 'line',
      data: { datasets: datasets },
      options: {
        animation: false,
        parsing: false,
        normalized: true,
        responsive: true,
        maintainAspectRatio: false,
        interaction: { mode: 'nearest', axis: 'x', intersect: false },
        elements: { line: { borderWidth: 2, tension: 0 }, point: { radius: 0, hitRadius: 6 } },
        scales: {
          x: { type: 'linear', title: { display: true, text: 'step' }, ticks: { precision: 0 }, grid: { color: '#eef0f4' } },
          y: { title: { display: true, text: yTitle }, grid: { color: '#eef0f4' } }
        },
        plugins: {
          legend: { position: 'bottom', labels: { boxWidth: 12, boxHeight: 2 } },
          tooltip: { callbacks: { title: function (items) { return items.length ? 'step ' + items[0].parsed.x : ''; } } }
        }
      }
    });
  }

  function initCharts() {
    if (charts || !window.Chart) return;
    charts = {
      perplexity: makeChart('chart-perplexity', [
        { label: 'train (smoothed, per round)', data: [], borderColor: COLORS.blue, backgroundColor: COLORS.blue },
        { label: 'validation', data: [], borderColor: COLORS.orange, backgroundColor: COLORS.orange, pointRadius: 3 }
      ], 'perplexity'),
      throughput: makeChart('chart-throughput', [
        { label: 'tokens/s (smoothed)', data: [], borderColor: COLORS.green, backgroundColor: 'rgba(31,157,85,0.12)', fill: 'origin' }
      ], 'tokens / s')
    };
    charts.throughput.options.scales.y.beginAtZero = true;
  }

  function chartPoints() {
    var pts = series.points;
    var last = pts.length ? pts[pts.length - 1] : null;
    return series.latest && (!last || series.latest.step > last.step) ? pts.concat([series.latest]) : pts;
  }

  function updateCharts(history) {
    initCharts();
    if (!charts) return;
    var pts = chartPoints();
    charts.perplexity.data.datasets[0].data = pts.map(function (p) { return { x: p.step, y: p.perplexity }; });
    charts.perplexity.data.datasets[1].data = history
      .filter(function (h) { return Number.isFinite(h.validationPerplexity); })
      .map(function (h) { return { x: h.step, y: h.validationPerplexity }; });
    charts.throughput.data.datasets[0].data = pts.map(function (p) { return { x: p.step, y: p.tokensPerSecond }; });
    charts.perplexity.update('none');
    charts.throughput.update('none');
  }

  function cell(tr, text, cls) {
    var td = document.createElement('td');
    td.textContent = text;
    if (cls) td.className = cls;
    tr.appendChild(td);
    return td;
  }

  function renderWorkers(workers, now) {
    var tbody = byId('workers').tBodies[0];
    var rows = document.createDocumentFragment();
    workers.forEach(function (w) {
      var tr = document.createElement('tr');
      tr.dataset.slot = w.slot;
      cell(tr, w.name, 'name').title = w.name;
      cell(tr, w.slot);
      cell(tr, w.backend);
      cell(tr, w.device);
      var median = cell(tr, fmtMs(w.stepMedianMs), 'num');
      median.title = 'median of the last ' + w.stepWindow + ' rounds';
      // A last step well above the median is one slow round, not a slow worker: flag it, do not hide it.
      cell(tr, fmtMs(w.stepMs), w.stepMs > 2 * w.stepMedianMs ? 'num slow' : 'num').title = 'last round';
      cell(tr, fmtMs(w.waitMs), 'num');
      cell(tr, fmtInt(w.rounds), 'num');
      cell(tr, fmtInt(w.tokens), 'num');
      var ago = now - w.lastSeen;
      cell(tr, fmtDuration(Math.max(0, ago)) + ' ago', ago > 10000 ? 'num stale' : 'num');
      rows.appendChild(tr);
    });
    tbody.replaceChildren(rows);
    byId('no-workers').hidden = workers.length > 0;
  }

  function renderSample(sample, prefix) {
    var pre = byId('sample');
    sample = sample || '';
    if (pre.dataset.sample === sample) return;
    pre.dataset.sample = sample;
    pre.replaceChildren();
    if (!sample) {
      var none = document.createElement('span');
      none.className = 'muted';
      none.textContent = 'No sample yet: one is generated every --sample-every epochs.';
      pre.appendChild(none);
      return;
    }
    var rest = sample;
    if (prefix && sample.indexOf(prefix) === 0) {
      var b = document.createElement('span');
      b.className = 'prefix';
      b.textContent = prefix;
      pre.appendChild(b);
      rest = sample.slice(prefix.length);
    }
    pre.appendChild(document.createTextNode(rest));
  }

  function render(s) {
    var state = byId('state');
    state.textContent = s.state;
    state.dataset.state = s.state;
    var shownEpoch = Math.min(s.epoch + 1, s.epochs);
    setParts('epoch', fmtInt(shownEpoch), ' / ' + fmtInt(s.epochs));
    setText('step', fmtInt(s.step));
    setText('model', s.model ? s.model.summary + ' \u00b7 ' + (s.model.tokenizer ? s.model.tokenizer + ' tokens \u00b7 ' : '') + fmtInt(s.model.paramCount) + ' parameters' : '');
    setText('workers-count', s.workersConnected + (s.minWorkers > 1 ? ' (min ' + s.minWorkers + ')' : ''));
    var latest = s.series.latest;
    var lastLog = s.history.length ? s.history[s.history.length - 1] : null;
    setText('tps', latest && s.state === 'training' ? fmtInt(latest.tokensPerSecond) : lastLog ? fmtInt(lastLog.tokensPerSecond) : '\\u2013');
    setText('train-ppl', latest ? fmtNum(latest.perplexity, 2) : lastLog ? fmtNum(lastLog.trainPerplexity, 2) : '\\u2013');
    var lastVal = s.history.filter(function (h) { return Number.isFinite(h.validationPerplexity); }).pop();
    setText('val-ppl', lastVal ? fmtNum(lastVal.validationPerplexity, 2) : '\\u2013');
    setText('elapsed', fmtDuration(s.now - s.startedAt));
    var frac = s.epochs > 0 ? Math.min(1, (s.epoch + (s.batchesInEpoch > 0 ? s.batch / s.batchesInEpoch : 0)) / s.epochs) : 0;
    byId('progress-bar').style.width = (100 * frac).toFixed(2) + '%';
    renderWorkers(s.workers, s.now);
    renderSample(s.sample, s.samplePrefix);
    setText('sample-how', s.sample ? (s.sampleTemperature > 0 ? 'drawn at temperature ' + s.sampleTemperature : 'greedy (d2l predict_ch8)') : '');
    updateCharts(s.history);
    document.title = 'dptrain \\u00b7 ' + s.state + ' \\u00b7 epoch ' + shownEpoch + '/' + s.epochs;
  }

  function mergeSeries(v) {
    if (v.generation !== series.generation) {
      series.generation = v.generation;
      series.points = v.points;
    } else {
      series.points = series.points.concat(v.points);
    }
    series.latest = v.latest;
  }

  function poll() {
    var since = series.points.length ? series.points[series.points.length - 1].step : -1;
    fetch('/status.json?since=' + since + '&generation=' + series.generation, { cache: 'no-store' })
      .then(function (r) {
        if (!r.ok) throw new Error('HTTP ' + r.status);
        return r.json();
      })
      .then(function (s) {
        if (runStartedAt !== null && s.startedAt !== runStartedAt) {
          // A restarted coordinator counts generations from 0 again: what we hold belongs to the old run.
          series = { generation: -1, points: [], latest: null };
          runStartedAt = null;
          return;
        }
        runStartedAt = s.startedAt;
        mergeSeries(s.series);
        render(s);
        lastOk = Date.now();
        byId('conn').hidden = true;
        setText('updated', 'updated ' + new Date(s.now).toLocaleTimeString());
      })
      .catch(function () {
        byId('conn').hidden = false;
        if (lastOk === 0) setText('updated', '');
      })
      .then(function () { setTimeout(poll, POLL_MS); });
  }

  poll();
})();
`;
