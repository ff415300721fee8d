// The live candle page: one SSE stream per page (/api/stream) brings a snapshot of the series, then only
// the candles that change; lightweight-charts draws them. State lives in the URL, so a link reopens it.
'use strict';

(function () {
  const LWC = window.LightweightCharts;
  const $ = (id) => document.getElementById(id);
  const query = new URLSearchParams(location.search);
  const state = {
    symbol: query.get('symbol') || '',
    interval: query.get('interval') || '1m',
    real: query.get('real') === '1',
    filled: query.get('filled') === '1',
    utc: query.get('utc') === '1',
  };
  const COLORS = { up: '#26a69a', down: '#ef5350', gap: '#5d6672', upVol: 'rgba(38,166,154,.45)',
                   downVol: 'rgba(239,83,80,.45)', gapVol: 'rgba(93,102,114,.3)' };
  const MAX_WHITESPACE = 20000;

  let bars = new Map();      // epoch seconds -> candle {t,o,h,l,c,v,n,s,g}
  let first = null, last = null;
  let step = 60;             // interval in seconds
  let view = '';
  let source = null;
  let status = null;
  let streamOk = false;
  let snapshots = 0;
  let hovered = null;

  // -- time formatting: the viewer's zone, or UTC -------------------------------------------------------
  const zoneName = () => (state.utc ? 'UTC' : Intl.DateTimeFormat().resolvedOptions().timeZone);
  function fmtTime(t, parts) {
    const options = { hour12: false, timeZone: state.utc ? 'UTC' : undefined };
    for (const p of parts) {
      if (p === 'date') Object.assign(options, { year: 'numeric', month: '2-digit', day: '2-digit' });
      if (p === 'time') Object.assign(options, { hour: '2-digit', minute: '2-digit' });
      if (p === 'seconds') Object.assign(options, { hour: '2-digit', minute: '2-digit', second: '2-digit' });
    }
    return new Intl.DateTimeFormat('sv-SE', options).format(new Date(t * 1000));
  }
  const fullTime = (t) => fmtTime(t, step >= 86400 ? ['date'] : ['date', 'time']);
  function tickMark(t, type) {
    const T = LWC.TickMarkType;
    if (type === T.Year) return fmtTime(t, ['date']).slice(0, 4);
    if (type === T.Month || type === T.DayOfMonth) return fmtTime(t, ['date']).slice(5);
    return fmtTime(t, ['time']);
  }

  // -- the chart -------------------------------------------------------------------------------------
  const chart = LWC.createChart($('chart'), {
    autoSize: true,
    layout: { background: { type: 'solid', color: '#0f1318' }, textColor: '#c8ccd2', attributionLogo: true,
              panes: { separatorColor: '#262d36' } },
    grid: { vertLines: { color: '#1b2129' }, horzLines: { color: '#1b2129' } },
    rightPriceScale: { borderColor: '#262d36' },
    timeScale: { borderColor: '#262d36', timeVisible: true, secondsVisible: false, rightOffset: 3,
                 tickMarkFormatter: tickMark },
    crosshair: { mode: LWC.CrosshairMode.Normal },
    localization: { timeFormatter: fullTime },
  });
  const candleSeries = chart.addSeries(LWC.CandlestickSeries, {
    upColor: COLORS.up, downColor: COLORS.down, wickUpColor: COLORS.up, wickDownColor: COLORS.down,
    borderVisible: false,
  });
  candleSeries.priceScale().applyOptions({ scaleMargins: { top: 0.08, bottom: 0.04 } });
  // Volume in a pane of its own below the candles, with its own scale.
  const volumeSeries = chart.addSeries(LWC.HistogramSeries, {
    priceFormat: { type: 'volume' }, lastValueVisible: false, priceLineVisible: false,
  }, 1);
  volumeSeries.priceScale().applyOptions({ scaleMargins: { top: 0.1, bottom: 0 } });
  chart.panes()[0].setStretchFactor(0.78);
  chart.panes()[1].setStretchFactor(0.22);

  const isUp = (c) => c.c >= c.o;
  function candlePoint(c) {
    const p = { time: c.t, open: c.o, high: c.h, low: c.l, close: c.c };
    if (c.g) Object.assign(p, { color: COLORS.gap, wickColor: COLORS.gap, borderColor: COLORS.gap });
    return p;
  }
  const volumePoint = (c) => ({ time: c.t, value: c.v, color: c.g ? COLORS.gapVol : (isUp(c) ? COLORS.upVol : COLORS.downVol) });

  function precisionFor(price) {
    if (!(price > 0)) return 2;
    return Math.min(8, Math.max(2, 4 - Math.floor(Math.log10(price))));
  }
  function fmtPrice(p) {
    const digits = precisionFor(last !== null ? bars.get(last).c : p);
    return p.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits });
  }
  const fmtVolume = (v) => v.toLocaleString('en-US', { maximumFractionDigits: v >= 100 ? 0 : 4 });

  // Every bucket between the first and last candle gets a slot (whitespace where the view has no row),
  // so a gap shows as empty time instead of two candles side by side.
  function rebuild() {
    const times = [...bars.keys()].sort((a, b) => a - b);
    first = times.length ? times[0] : null;
    last = times.length ? times[times.length - 1] : null;
    const cs = [], vs = [];
    let prev = null;
    for (const t of times) {
      if (prev !== null && (t - prev) / step <= MAX_WHITESPACE) {
        for (let g = prev + step; g < t; g += step) { cs.push({ time: g }); vs.push({ time: g }); }
      }
      const c = bars.get(t);
      cs.push(candlePoint(c)); vs.push(volumePoint(c));
      prev = t;
    }
    candleSeries.setData(cs);
    volumeSeries.setData(vs);
    if (last !== null) {
      const digits = precisionFor(bars.get(last).c);
      candleSeries.applyOptions({ priceFormat: { type: 'price', precision: digits, minMove: 10 ** -digits } });
    }
  }

  function applyCandles(list) {
    try {
      for (const c of list) {
        bars.set(c.t, c);
        if (last === null || c.t > last) {
          if (last !== null && (c.t - last) / step <= MAX_WHITESPACE) {
            for (let g = last + step; g < c.t; g += step) { candleSeries.update({ time: g }); volumeSeries.update({ time: g }); }
          }
          candleSeries.update(candlePoint(c)); volumeSeries.update(volumePoint(c));
          last = c.t;
          if (first === null) first = c.t;
        } else if (c.t >= first) {
          candleSeries.update(candlePoint(c), true); volumeSeries.update(volumePoint(c), true);
        } else {
          rebuild();
        }
      }
    } catch (err) {
      console.warn('incremental update failed, redrawing', err);
      rebuild();
    }
    renderQuote(); renderLegend(); renderInfo();
  }

  // -- text around the chart --------------------------------------------------------------------------
  function renderQuote() {
    $('quote-symbol').textContent = state.symbol || '…';
    const c = last !== null ? bars.get(last) : null;
    $('price').textContent = c ? fmtPrice(c.c) : '—';
    const times = c ? [...bars.keys()].filter((t) => t < last) : [];
    const prevClose = times.length ? bars.get(Math.max(...times)).c : (c ? c.o : null);
    const change = c && prevClose ? (c.c - prevClose) / prevClose * 100 : null;
    $('change').textContent = change === null ? '' : `${change >= 0 ? '▲ +' : '▼ '}${change.toFixed(2)}%`;
    $('change').className = change === null ? '' : (change >= 0 ? 'up' : 'down');
    $('price').className = $('change').className;
    document.title = c ? `${state.symbol} ${fmtPrice(c.c)} · cryptopipe` : 'cryptopipe candles';
  }

  function renderLegend() {
    const legend = $('legend');
    const t = hovered !== null ? hovered : last;
    if (t === null) { legend.textContent = snapshots ? 'no candles in this view yet' : 'loading…'; return; }
    const c = bars.get(t);
    legend.replaceChildren();
    const span = (cls, text) => { const s = document.createElement('span'); if (cls) s.className = cls; s.textContent = text; legend.append(s); return s; };
    span('time', `${fullTime(t)} ${state.utc ? 'UTC' : ''}`.trim());
    if (!c) { span('gap', `no ticks in this ${state.interval} bucket`); return; }
    const dir = isUp(c) ? 'up' : 'down';
    for (const [k, v] of [['O', c.o], ['H', c.h], ['L', c.l], ['C', c.c]]) {
      span('key', ` ${k} `); span(`${dir} ${k.toLowerCase()}`, fmtPrice(v));
    }
    span('', ` · Vol ${fmtVolume(c.v)} · ${c.n} tick${c.n === 1 ? '' : 's'}`);
    if (c.g) span('gap', 'gap-filled: no ticks, flat at the previous close');
    else if (c.n > 0) {
      const share = c.s / c.n * 100;
      span('synthetic', `synthetic ${share.toFixed(share > 0 && share < 1 ? 1 : 0)}% (${c.s} of ${c.n})`);
    }
  }

  function renderInfo() {
    const n = bars.size;
    $('info').textContent = `${view} · ${n} candle${n === 1 ? '' : 's'} · times in ${zoneName()}` +
      (state.real ? ' · real ticks only' : '') + (state.filled && !state.real ? ' · gaps filled' : '');
  }

  function ago(iso) {
    const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
    if (s < 120) return `${s} s ago`;
    if (s < 7200) return `${Math.round(s / 60)} min ago`;
    return `${Math.round(s / 3600)} h ago`;
  }

  function renderBanner() {
    const banner = $('banner');
    let kind = '', text = '';
    if (!streamOk) {
      kind = 'stream'; text = 'Chart server unreachable or full: reconnecting… (the chart shows the last candles received)';
    } else if (status && !status.db) {
      kind = 'db';
      const since = status.db_down_since ? ` since ${fmtTime(Date.parse(status.db_down_since) / 1000, ['seconds'])}` : '';
      text = `Database unreachable${since}: reconnecting… (the chart shows the last candles received; ${status.db_error || 'no connection'})`;
    } else if (status && status.query_error) {
      kind = 'query'; text = `Candle query failed, retrying: ${status.query_error}`;
    } else if (status && status.stale) {
      kind = 'stale';
      text = status.last_tick
        ? `Stale: no new tick for ${status.symbol} since ${fmtTime(Date.parse(status.last_tick) / 1000, ['date', 'seconds'])} (${ago(status.last_tick)}; alert after ${status.stale_seconds} s)`
        : `No ticks for ${status.symbol} yet`;
    }
    banner.hidden = !text;
    banner.dataset.kind = kind;
    banner.textContent = text;
  }

  // -- the stream -------------------------------------------------------------------------------------
  const variant = () => (state.real ? 'real' : (state.filled ? 'filled' : 'all'));

  function connect() {
    if (source) source.close();
    bars = new Map(); first = null; last = null; hovered = null; status = null;
    window.cryptochart.ready = false;
    candleSeries.setData([]); volumeSeries.setData([]);
    renderQuote(); renderLegend();
    const params = new URLSearchParams({ symbol: state.symbol, interval: state.interval, variant: variant() });
    source = new EventSource(`/api/stream?${params}`);
    source.addEventListener('hello', () => { streamOk = true; renderBanner(); });
    source.addEventListener('snapshot', (e) => {
      const snap = JSON.parse(e.data);
      step = snap.interval_seconds; view = snap.view;
      bars = new Map(snap.candles.map((c) => [c.t, c]));
      rebuild();
      const visible = 240;
      const total = first === null ? 0 : (last - first) / step + 1;
      if (total > visible) chart.timeScale().setVisibleLogicalRange({ from: total - visible, to: total + 3 });
      else chart.timeScale().fitContent();
      snapshots += 1;
      window.cryptochart.ready = true;
      renderQuote(); renderLegend(); renderInfo();
    });
    source.addEventListener('candles', (e) => applyCandles(JSON.parse(e.data).candles));
    source.addEventListener('status', (e) => { status = JSON.parse(e.data); renderBanner(); });
    const opened = source;
    source.onerror = () => {  // EventSource reconnects by itself, except after a refusal (503: the chart is full)
      streamOk = false; renderBanner();
      if (opened.readyState === EventSource.CLOSED) setTimeout(() => { if (source === opened) connect(); }, 10000);
    };
  }

  // -- controls -----------------------------------------------------------------------------------------
  function saveState() {
    const q = new URLSearchParams({ symbol: state.symbol, interval: state.interval });
    if (state.real) q.set('real', '1');
    if (state.filled) q.set('filled', '1');
    if (state.utc) q.set('utc', '1');
    history.replaceState(null, '', `?${q}`);
  }

  function renderControls() {
    for (const b of $('intervals').querySelectorAll('button')) b.setAttribute('aria-pressed', String(b.dataset.interval === state.interval));
    $('real').checked = state.real;
    $('filled').checked = state.filled && !state.real;
    $('filled').disabled = state.real;  // the database has gap-filled views of all ticks only
    $('filled-label').classList.toggle('disabled', state.real);
    $('filled-label').title = state.real ? 'gap filling is available for all ticks only (there is no gap-filled view of real ticks)'
                                         : 'a bucket without ticks is a flat grey candle at the previous close';
    $('utc').checked = state.utc;
  }

  function change(update) {
    Object.assign(state, update);
    saveState(); renderControls(); connect();
  }

  async function loadSymbols() {
    const meta = await (await fetch('/api/meta')).json();
    if (!state.symbol) state.symbol = meta.default_symbol || meta.symbols[0] || '';
    const symbols = meta.symbols.includes(state.symbol) || !state.symbol ? meta.symbols : [state.symbol, ...meta.symbols];
    const select = $('symbol');
    select.replaceChildren(...symbols.map((s) => new Option(s, s, false, s === state.symbol)));
  }

  $('intervals').addEventListener('click', (e) => {
    const interval = e.target.dataset && e.target.dataset.interval;
    if (interval && interval !== state.interval) change({ interval });
  });
  $('symbol').addEventListener('change', (e) => change({ symbol: e.target.value }));
  $('symbol').addEventListener('focus', () => loadSymbols().catch(() => {}));
  $('real').addEventListener('change', (e) => change({ real: e.target.checked }));
  $('filled').addEventListener('change', (e) => change({ filled: e.target.checked }));
  $('utc').addEventListener('change', (e) => {
    state.utc = e.target.checked; saveState();
    chart.applyOptions({ localization: { timeFormatter: fullTime }, timeScale: { tickMarkFormatter: tickMark } });
    renderLegend(); renderInfo(); renderBanner();
  });
  chart.subscribeCrosshairMove((param) => {
    hovered = param && param.time !== undefined ? param.time : null;
    renderLegend();
  });
  setInterval(renderBanner, 1000);

  // What tests (and curious users, in the console) can read: exactly what the chart library holds.
  window.cryptochart = {
    ready: false,
    state: () => ({ ...state, variant: variant(), view, step, snapshots }),
    candles: () => candleSeries.data().filter((d) => d.open !== undefined)
      .map((d) => ({ time: d.time, open: d.open, high: d.high, low: d.low, close: d.close })),
    volumes: () => volumeSeries.data().filter((d) => d.value !== undefined).map((d) => ({ time: d.time, value: d.value })),
    coordinateOf: (time) => chart.timeScale().timeToCoordinate(time),
  };

  renderControls();
  loadSymbols().then(() => { saveState(); renderControls(); connect(); })
    .catch((err) => { $('info').textContent = `cannot reach the chart server: ${err}`; });
})();
