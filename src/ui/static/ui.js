// The dashboard's own script: times in the browser's zone, confirmations, the CSRF token on
// htmx's requests, charts (uPlot) and the live tail (server-sent events). No framework.
(() => {
  const csrf = document.body.dataset.csrf;

  // ---- times in the browser's time zone -------------------------------------------------------
  const format = new Intl.DateTimeFormat(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  const localTimes = (root) => {
    for (const el of root.querySelectorAll('time[datetime]:not([data-local])')) {
      const when = new Date(el.getAttribute('datetime'));
      if (!Number.isNaN(when.getTime())) {
        el.textContent = format.format(when);
        el.title = el.getAttribute('datetime');
        el.dataset.local = '1';
      }
    }
  };

  // ---- confirmations before destructive forms ---------------------------------------------------
  document.addEventListener('submit', (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) event.preventDefault();
  });

  // ---- htmx: the session's CSRF token on every request it makes ------------------------------------
  const addToken = (event) => {
    const detail = event.detail || {};
    const headers = detail.headers || detail.ctx?.request?.headers;
    if (csrf && headers) {
      if (typeof headers.set === 'function') headers.set('X-CSRF-Token', csrf);
      else headers['X-CSRF-Token'] = csrf;
    }
  };
  document.addEventListener('htmx:configRequest', addToken);
  document.addEventListener('htmx:config:request', addToken);
  const swapped = (event) => localTimes(event.target instanceof Element ? event.target : document);
  document.addEventListener('htmx:afterSwap', swapped);
  document.addEventListener('htmx:after:swap', swapped);

  // ---- charts -----------------------------------------------------------------------------------
  const CHARTS = [
    { title: 'Calls per second', series: [{ key: 'rate', label: 'calls/s', stroke: '#2563eb' }] },
    { title: 'Errors', series: [{ key: 'errors', label: 'failed calls', stroke: '#dc2626' }] },
    {
      title: 'Duration (ms)',
      series: [
        { key: 'p50', label: 'p50', stroke: '#0f766e' },
        { key: 'p95', label: 'p95', stroke: '#b45309' },
      ],
    },
    {
      title: 'Cold starts',
      series: [{ key: 'coldShare', label: 'cold share (%)', stroke: '#7c3aed', scale: 100 }],
    },
    { title: 'Init time (ms)', series: [{ key: 'initMs', label: 'mean init', stroke: '#be185d' }] },
  ];
  const drawCharts = async (holder) => {
    if (typeof window.uPlot !== 'function') return;
    let data;
    try {
      const response = await fetch(holder.dataset.series, {
        headers: { accept: 'application/json' },
        credentials: 'same-origin',
      });
      if (!response.ok) throw new Error(`${response.status}`);
      data = await response.json();
    } catch (error) {
      holder.textContent = `The chart data could not be read (${error.message}).`;
      return;
    }
    holder.replaceChildren();
    holder.dataset.runs = String(data.runs);
    const width = Math.max(260, Math.min(holder.clientWidth || 600, 640));
    for (const chart of CHARTS) {
      const figure = document.createElement('figure');
      figure.className = 'chart';
      const caption = document.createElement('figcaption');
      caption.textContent = chart.title;
      figure.append(caption);
      holder.append(figure);
      const columns = [data.time, ...chart.series.map((s) => data[s.key].map((v) => (v === null ? null : v * (s.scale || 1))))];
      // uPlot draws in local time by default: the axis is in the browser's time zone.
      new window.uPlot(
        {
          width,
          height: 150,
          series: [{}, ...chart.series.map((s) => ({ label: s.label, stroke: s.stroke, width: 1.5, spanGaps: false }))],
          axes: [{}, { size: 50 }],
          legend: { live: false },
        },
        columns,
        figure,
      );
      figure.setAttribute('role', 'img');
      figure.setAttribute('aria-label', `${chart.title}, the last hour by minute`);
    }
  };

  // ---- live tail --------------------------------------------------------------------------------
  const follow = (button) => {
    const section = button.closest('.tail');
    const rows = section.querySelector('.tail-rows');
    const state = section.querySelector('.tail-state');
    let source;
    button.addEventListener('click', () => {
      if (source) {
        source.close();
        source = undefined;
        button.setAttribute('aria-pressed', 'false');
        button.textContent = 'Follow new activations';
        state.textContent = 'Stopped.';
        return;
      }
      source = new EventSource(button.dataset.stream);
      button.setAttribute('aria-pressed', 'true');
      button.textContent = 'Stop following';
      state.textContent = 'Following…';
      source.addEventListener('open', () => {
        state.textContent = 'Following: new activations appear here.';
      });
      source.addEventListener('activation', (event) => {
        const template = document.createElement('template');
        template.innerHTML = `<table><tbody>${event.data}</tbody></table>`;
        const row = template.content.querySelector('tr');
        if (!row) return;
        rows.prepend(row);
        localTimes(row);
        while (rows.children.length > 200) rows.lastElementChild.remove();
      });
      source.addEventListener('logs', (event) => {
        const { id, logs } = JSON.parse(event.data);
        const row = [...rows.querySelectorAll('tr[data-id]')].find((r) => r.dataset.id === id);
        if (!row) return;
        const logRow = document.createElement('tr');
        logRow.className = 'log-row';
        const cell = document.createElement('td');
        cell.colSpan = row.children.length;
        const pre = document.createElement('pre');
        pre.className = 'logs';
        pre.tabIndex = 0;
        pre.setAttribute('aria-label', `Logs of ${id}`);
        pre.textContent = logs.join('\n');
        cell.append(pre);
        logRow.append(cell);
        row.after(logRow);
      });
      source.addEventListener('error', () => {
        state.textContent = 'Connection lost; trying again…';
      });
    });
  };

  const start = () => {
    localTimes(document);
    for (const holder of document.querySelectorAll('.charts[data-series]')) void drawCharts(holder);
    for (const button of document.querySelectorAll('.tail-toggle[data-stream]')) follow(button);
  };
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start);
  else start();
})();
