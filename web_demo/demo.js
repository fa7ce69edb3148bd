// The digit demo: draw on #pad, preprocess like MNIST, classify, show the probabilities.
'use strict';

(function () {
  const {el, ModelError} = F2T;
  const MODEL_URL = 'model/model.json';
  const SIDE = 28;          // model input: 28 x 28 x 1, white ink on black, 0..1
  const BOX = 20;           // MNIST digits are scaled to fit 20 x 20 ...
  const CENTRE = 14;        // ... and shifted so their centre of mass is at pixel (14, 14)
  const PEN_FRACTION = 0.08; // pen width on screen, relative to the pad
  // The model sees the strokes redrawn at a fixed width relative to the digit (MNIST strokes are
  // 2-3 px in the 20 px box), so small and large drawings look alike once normalised.
  const NORM_BOX = 200;      // render the normalised digit at 10x the 20 px box ...
  const NORM_PEN = 25;       // ... with a pen of 2.5 px in MNIST pixels

  const pad = document.getElementById('pad');
  const ctx = pad.getContext('2d', {willReadFrequently: true});
  const preview = document.getElementById('preview');
  const prediction = document.getElementById('prediction');
  const confidence = document.getElementById('confidence');
  const bars = document.getElementById('bars');
  const latency = document.getElementById('latency');
  const modelInfo = document.getElementById('model-info');
  const backendSelect = document.getElementById('backend');
  const errorBox = document.getElementById('error');

  let loaded = null;        // fetched files, kept to rebuild the model on another backend
  let model = null;
  let labels = [];
  let current = null;       // the last 28x28 input, re-run after a backend change
  let version = 0;          // bumps at every change of the pad; predictions carry it
  let strokes = [];         // what was drawn, as point lists in pad pixels
  let rasterOnly = false;   // a sample image is on the pad: only its pixels describe it
  let queue = Promise.resolve();

  F2T.catchAll(errorBox, () => setState('error'));

  function setState(state) {
    document.body.dataset.state = state;
  }

  // ---------- drawing ----------

  function clearPad() {
    ctx.fillStyle = '#fff';
    ctx.fillRect(0, 0, pad.width, pad.height);
  }

  function padPoint(event) {
    // Client coordinates -> canvas pixels, inside the border and whatever the CSS size.
    const r = pad.getBoundingClientRect();
    return [(event.clientX - r.left - pad.clientLeft) * (pad.width / pad.clientWidth),
      (event.clientY - r.top - pad.clientTop) * (pad.height / pad.clientHeight)];
  }

  function setupPen() {
    ctx.strokeStyle = ctx.fillStyle = '#111';
    ctx.lineWidth = PEN_FRACTION * pad.width;
    ctx.lineCap = 'round';
    ctx.lineJoin = 'round';
  }

  let last = null;
  pad.addEventListener('pointerdown', (event) => {
    event.preventDefault();
    try {
      pad.setPointerCapture(event.pointerId); // keep the stroke when the pen leaves the pad
    } catch (err) { /* synthetic events have no active pointer; drawing works without capture */ }
    last = padPoint(event);
    strokes.push([last]);
    setupPen();
    ctx.beginPath();
    ctx.arc(last[0], last[1], ctx.lineWidth / 2, 0, 2 * Math.PI);
    ctx.fill();
  });
  pad.addEventListener('pointermove', (event) => {
    if (!last) return;
    const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [event];
    setupPen();
    ctx.beginPath();
    ctx.moveTo(last[0], last[1]);
    for (const e of events.length ? events : [event]) {
      last = padPoint(e);
      strokes[strokes.length - 1].push(last);
      ctx.lineTo(last[0], last[1]);
    }
    ctx.stroke();
  });
  const endStroke = () => {
    if (!last) return;
    last = null;
    classifyPad();
  };
  pad.addEventListener('pointerup', endStroke);
  pad.addEventListener('pointercancel', endStroke);

  document.getElementById('clear').addEventListener('click', () => {
    clearPad();
    version += 1;
    current = null;
    strokes = [];
    rasterOnly = false;
    showEmpty('Draw something to start.');
    prediction.dataset.version = String(version);
  });

  // ---------- MNIST-style preprocessing ----------

  // Ink per pad pixel, 0 (paper) .. 1 (black).
  function padInk() {
    const {data} = ctx.getImageData(0, 0, pad.width, pad.height);
    const ink = new Float32Array(pad.width * pad.height);
    for (let i = 0; i < ink.length; i++) ink[i] = 1 - data[4 * i] / 255;
    return ink;
  }

  // Weights mapping `n` source cells onto `m` target cells by exact area overlap (box filter),
  // so thin strokes fade to grey instead of vanishing or aliasing.
  function areaWeights(n, m) {
    const scale = n / m;
    const rows = [];
    for (let t = 0; t < m; t++) {
      const a = t * scale;
      const b = (t + 1) * scale;
      const row = [];
      for (let s = Math.floor(a); s < Math.min(n, Math.ceil(b)); s++) {
        const w = Math.min(b, s + 1) - Math.max(a, s);
        if (w > 0) row.push([s, w / scale]);
      }
      rows.push(row);
    }
    return rows;
  }

  function resample(src, w, h, tw, th) {
    const wx = areaWeights(w, tw);
    const wy = areaWeights(h, th);
    const tmp = new Float32Array(tw * h);
    for (let y = 0; y < h; y++) {
      for (let tx = 0; tx < tw; tx++) {
        let v = 0;
        for (const [s, k] of wx[tx]) v += src[y * w + s] * k;
        tmp[y * tw + tx] = v;
      }
    }
    const out = new Float32Array(tw * th);
    for (let ty = 0; ty < th; ty++) {
      for (let tx = 0; tx < tw; tx++) {
        let v = 0;
        for (const [s, k] of wy[ty]) v += tmp[s * tw + tx] * k;
        out[ty * tw + tx] = v;
      }
    }
    return out;
  }

  function blur3(img) {
    // [1 2 1] x [1 2 1] / 16, edges clamped: a light blur like MNIST's anti-aliasing.
    const k = [1, 2, 1];
    const out = new Float32Array(SIDE * SIDE);
    for (let y = 0; y < SIDE; y++) {
      for (let x = 0; x < SIDE; x++) {
        let v = 0;
        for (let dy = -1; dy <= 1; dy++) {
          for (let dx = -1; dx <= 1; dx++) {
            const yy = Math.min(SIDE - 1, Math.max(0, y + dy));
            const xx = Math.min(SIDE - 1, Math.max(0, x + dx));
            v += img[yy * SIDE + xx] * k[dy + 1] * k[dx + 1];
          }
        }
        out[y * SIDE + x] = v / 16;
      }
    }
    return out;
  }

  // Pad ink -> 28 x 28 MNIST-like image (Float32Array, 0..1), or null when the pad is empty.
  function toMnist(ink, w, h) {
    let x0 = w, y0 = h, x1 = -1, y1 = -1;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        if (ink[y * w + x] > 0.1) {
          if (x < x0) x0 = x;
          if (x > x1) x1 = x;
          if (y < y0) y0 = y;
          if (y > y1) y1 = y;
        }
      }
    }
    if (x1 < 0) return null;
    const cw = x1 - x0 + 1;
    const ch = y1 - y0 + 1;
    const crop = new Float32Array(cw * ch);
    for (let y = 0; y < ch; y++) crop.set(ink.subarray((y0 + y) * w + x0, (y0 + y) * w + x0 + cw), y * cw);
    const scale = BOX / Math.max(cw, ch);
    const tw = Math.max(1, Math.round(cw * scale));
    const th = Math.max(1, Math.round(ch * scale));
    const small = resample(crop, cw, ch, tw, th);
    let mass = 0, mx = 0, my = 0;
    for (let y = 0; y < th; y++) {
      for (let x = 0; x < tw; x++) {
        const v = small[y * tw + x];
        mass += v; mx += v * x; my += v * y;
      }
    }
    const clamp = (v, hi) => Math.min(hi, Math.max(0, v));
    const ox = clamp(Math.round(CENTRE - mx / mass), SIDE - tw);
    const oy = clamp(Math.round(CENTRE - my / mass), SIDE - th);
    const img = new Float32Array(SIDE * SIDE);
    for (let y = 0; y < th; y++) img.set(small.subarray(y * tw, (y + 1) * tw), (oy + y) * SIDE + ox);
    const soft = blur3(img);
    let peak = 0;
    for (const v of soft) peak = Math.max(peak, v);
    for (let i = 0; i < soft.length; i++) soft[i] = Math.min(1, soft[i] / peak);
    return soft;
  }

  // Redraw `lines` (point lists) so that their ink fills NORM_BOX with a NORM_PEN wide pen.
  function strokesInk(lines) {
    const pts = lines.flat();
    const xs = pts.map((p) => p[0]);
    const ys = pts.map((p) => p[1]);
    const x0 = Math.min(...xs), y0 = Math.min(...ys);
    const w = Math.max(...xs) - x0, h = Math.max(...ys) - y0;
    // A dot has no size: cap the zoom so it stays a dot instead of a disc.
    const zoom = Math.min(4, (NORM_BOX - NORM_PEN) / Math.max(w, h, 1e-6));
    const side = NORM_BOX + 2 * NORM_PEN;
    const canvas = el('canvas', {width: side, height: side});
    const c = canvas.getContext('2d', {willReadFrequently: true});
    c.fillStyle = '#fff';
    c.fillRect(0, 0, side, side);
    c.translate(side / 2 - (w * zoom) / 2, side / 2 - (h * zoom) / 2);
    c.strokeStyle = c.fillStyle = '#000';
    c.lineWidth = NORM_PEN;
    c.lineCap = 'round';
    c.lineJoin = 'round';
    for (const line of lines) {
      const [sx, sy] = [(line[0][0] - x0) * zoom, (line[0][1] - y0) * zoom];
      c.beginPath();
      c.arc(sx, sy, NORM_PEN / 2, 0, 2 * Math.PI);
      c.fill();
      c.beginPath();
      c.moveTo(sx, sy);
      for (const [x, y] of line.slice(1)) c.lineTo((x - x0) * zoom, (y - y0) * zoom);
      c.stroke();
    }
    const {data} = c.getImageData(0, 0, side, side);
    const ink = new Float32Array(side * side);
    for (let i = 0; i < ink.length; i++) ink[i] = 1 - data[4 * i] / 255;
    return {ink, side};
  }

  // What the model gets for the current pad.
  function padToMnist() {
    if (rasterOnly || !strokes.length) return toMnist(padInk(), pad.width, pad.height);
    const {ink, side} = strokesInk(strokes);
    return toMnist(ink, side, side);
  }

  function showPreview(img) {
    const pctx = preview.getContext('2d');
    const data = pctx.createImageData(SIDE, SIDE);
    for (let i = 0; i < SIDE * SIDE; i++) {
      const v = img ? Math.round(img[i] * 255) : 0;
      data.data.set([v, v, v, 255], 4 * i);
    }
    pctx.putImageData(data, 0, 0);
  }

  // ---------- inference ----------

  function classifyPad() {
    version += 1;
    classify(padToMnist(), version);
  }

  function classify(img, v) {
    current = img;
    showPreview(img);
    queue = queue.then(() => runModel(img, v)).catch((err) => {
      F2T.showError(errorBox, err);
      setState('error');
    });
    return queue;
  }

  function softmax(values) {
    const max = Math.max(...values);
    const exps = values.map((x) => Math.exp(x - max));
    const sum = exps.reduce((a, b) => a + b, 0);
    return exps.map((e) => e / sum);
  }

  async function runModel(img, v) {
    if (!model) return;
    if (!img) {
      showEmpty('The pad is empty.');
      prediction.dataset.version = String(v);
      return;
    }
    const inputShape = [1, ...model.inputs[0].shape.slice(1)];
    const start = performance.now();
    const output = tf.tidy(() => model.predict(tf.tensor(img, inputShape)));
    const values = Array.from(await output.data());
    const ms = performance.now() - start;
    output.dispose();
    if (v !== version) return; // the pad changed meanwhile; a newer prediction follows
    // The MNIST model ends in logits; a model ending in softmax already gives probabilities.
    const isProb = values.every((p) => p >= 0 && p <= 1) && Math.abs(values.reduce((a, b) => a + b, 0) - 1) < 1e-3;
    const probs = isProb ? values : softmax(values);
    const best = probs.indexOf(Math.max(...probs));
    prediction.textContent = labels[best];
    prediction.dataset.version = String(v);
    prediction.dataset.index = String(best);
    confidence.textContent = `${(probs[best] * 100).toFixed(1)} % sure`;
    latency.textContent = `${F2T.formatMs(ms)} on ${tf.getBackend()}`;
    bars.querySelectorAll('.bar').forEach((bar, i) => {
      bar.classList.toggle('best', i === best);
      bar.dataset.p = probs[i].toFixed(6);
      bar.querySelector('.bar-fill').style.width = `${(probs[i] * 100).toFixed(2)}%`;
      bar.querySelector('.bar-value').textContent = `${(probs[i] * 100).toFixed(probs[i] >= 0.995 ? 0 : 1)}%`;
    });
  }

  function showEmpty(message) {
    prediction.textContent = '–';
    delete prediction.dataset.index;
    confidence.textContent = message;
    showPreview(null);
    bars.querySelectorAll('.bar').forEach((bar) => {
      bar.classList.remove('best');
      bar.dataset.p = '0';
      bar.querySelector('.bar-fill').style.width = '0%';
      bar.querySelector('.bar-value').textContent = '';
    });
  }

  function buildBars(n) {
    bars.replaceChildren(...labels.slice(0, n).map((label) => el('div', {class: 'bar'},
      el('span', {class: 'bar-label', text: label}),
      el('span', {class: 'bar-track'}, el('span', {class: 'bar-fill'})),
      el('span', {class: 'bar-value'}),
    )));
  }

  // The demo needs one 28x28 grayscale input (any layout with 784 values) and class scores.
  function checkShapes(m) {
    const inShape = m.inputs[0].shape.slice(1);
    const outShape = m.outputs[0].shape.slice(1);
    const size = inShape.reduce((a, d) => a * (d == null ? NaN : d), 1);
    if (m.inputs.length !== 1 || size !== SIDE * SIDE || outShape.length !== 1 || !(outShape[0] >= 2)) {
      throw new ModelError(
        `This model takes ${JSON.stringify(m.inputs.map((i) => i.shape))} and returns ${JSON.stringify(m.outputs.map((o) => o.shape))}; the digit demo needs one 28×28×1 input and one vector of class scores.`,
        'Open it in the model tester (tester.html) instead.');
    }
    return outShape[0];
  }

  function describeModel(doc, m) {
    const meta = doc.userDefinedMetadata || {};
    const prov = meta.flax2tfjs || {};
    const parts = [];
    if (prov.source && prov.source.name) parts.push(`${prov.source.name}${prov.source.format ? ` (${prov.source.format})` : ''}`);
    parts.push(`${m.countParams().toLocaleString('en-US')} parameters`);
    if (prov.quantization && prov.quantization.dtype) parts.push(`${prov.quantization.dtype} weights`);
    parts.push(`${F2T.formatBytes(F2T.totalBytes(loaded.files))}`);
    if (doc.convertedBy) parts.push(`by ${doc.convertedBy}`);
    return parts.join(' · ');
  }

  async function loadOn(backend) {
    setState('loading');
    latency.textContent = '–';
    const used = await F2T.useBackend(backend);
    backendSelect.value = used;
    if (model) model.dispose();
    model = null;
    const m = await F2T.buildModel(loaded);
    const classes = checkShapes(m);
    const meta = loaded.doc.userDefinedMetadata || {};
    labels = Array.isArray(meta.labels) && meta.labels.length === classes
      ? meta.labels.map(String) : Array.from({length: classes}, (_, i) => String(i));
    if (bars.children.length !== classes) buildBars(classes);
    // Warm up once: the first webgl call compiles shaders and would distort the timing.
    const warm = tf.tidy(() => m.predict(tf.zeros([1, ...m.inputs[0].shape.slice(1)])));
    await warm.data(); // webgl compiles its shaders only when a result is read
    warm.dispose();
    model = m;
    modelInfo.textContent = describeModel(loaded.doc, m);
    setState('ready');
  }

  async function start() {
    clearPad();
    showPreview(null);
    const wanted = new URLSearchParams(location.search).get('backend');
    if (typeof tf === 'undefined') {
      throw new ModelError('TensorFlow.js did not load.', 'vendor/tf.es2017.min.js is missing from the site; run `python scripts/build_demo.py` and upload the whole web_demo folder.');
    }
    if (location.protocol === 'file:') {
      throw new ModelError('This page must be served over HTTP.', 'Browsers do not let a file:// page fetch the model. Run `python -m writer demo` or any static server in this folder.');
    }
    loaded = await F2T.fetchModel(MODEL_URL);
    // wasm first: for a model this small it is as fast as webgl on a GPU and far faster than
    // webgl on machines that emulate the GPU in software.
    const order = wanted ? [wanted] : ['wasm', 'webgl', 'cpu'];
    let backend;
    try {
      backend = await F2T.firstBackend(order);
    } catch (err) {
      if (!wanted) throw err;
      backend = await F2T.firstBackend(['wasm', 'webgl', 'cpu']);
    }
    await loadOn(backend);
    for (const w of loaded.warnings) F2T.showError(errorBox, new ModelError(w));
    if (current) await runModel(current, version); // drawn while the model was loading
    else showEmpty('Draw something to start.');
    loadSamples(); // optional extra: the demo works without samples.json
  }

  backendSelect.addEventListener('change', () => {
    const chosen = backendSelect.value;
    queue = queue.then(async () => {
      errorBox.hidden = true;
      await loadOn(chosen);
      await runModel(current, version);
    }).catch((err) => {
      F2T.showError(errorBox, err);
      setState('error');
    });
  });

  // ---------- sample digits ----------

  async function loadSamples() {
    const box = document.getElementById('samples');
    let doc;
    try {
      const response = await fetch('samples.json');
      if (!response.ok) throw new Error(`HTTP ${response.status}`);
      doc = await response.json();
    } catch (err) {
      box.replaceChildren(el('span', {class: 'hint', text: `Sample digits unavailable (${err.message}).`}));
      return;
    }
    box.replaceChildren(...doc.digits.map((digit, i) => {
      const thumb = el('canvas', {width: SIDE, height: SIDE});
      const tctx = thumb.getContext('2d');
      const data = tctx.createImageData(SIDE, SIDE);
      digit.pixels.forEach((v, j) => data.data.set([v, v, v, 255], 4 * j));
      tctx.putImageData(data, 0, 0);
      const button = el('button', {type: 'button', class: 'sample', title: `MNIST test digit #${digit.test_index} (label ${digit.label})`, 'data-index': i}, thumb);
      button.setAttribute('aria-label', `Sample digit, label ${digit.label}`);
      button.addEventListener('click', () => showSample(digit.pixels));
      return button;
    }));
  }

  // Paint the sample large on the pad (dark ink on paper) and classify its exact pixels.
  function showSample(pixels) {
    const img = new Float32Array(pixels.map((v) => v / 255));
    const tmp = el('canvas', {width: SIDE, height: SIDE});
    const tctx = tmp.getContext('2d');
    const data = tctx.createImageData(SIDE, SIDE);
    pixels.forEach((v, j) => data.data.set([255 - v, 255 - v, 255 - v, 255], 4 * j));
    tctx.putImageData(data, 0, 0);
    clearPad();
    strokes = [];
    rasterOnly = true;
    ctx.imageSmoothingEnabled = true;
    ctx.drawImage(tmp, 0, 0, pad.width, pad.height);
    version += 1;
    classify(img, version);
  }

  // For automation and the curious: the preprocessing is a pure function of the pad.
  window.demo = {toMnist, padInk, padToMnist, get version() { return version; }};

  start().catch((err) => {
    F2T.showError(errorBox, err);
    modelInfo.textContent = 'not loaded';
    setState('error');
  });
})();
