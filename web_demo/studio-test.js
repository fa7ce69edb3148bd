// The studio's "Test in this browser" tab: load the converted model into TensorFlow.js in the page
// and time a prediction on cpu, wasm and webgl for random, image or JSON input. Loaded after
// studio.js, whose state and helpers it uses through window.studio.
'use strict';

(function () {
  const $ = (id) => document.getElementById(id);
  const studio = window.studio;
  const {showError, clearError, setState, table, count} = studio.ui;

  // The in-page test's input: random, an image (the tester's F2T.imageTensor), or pasted JSON.
  const browserMode = () => document.querySelector('input[name="browser-mode"]:checked').value;
  document.querySelectorAll('input[name="browser-mode"]').forEach((radio) => radio.addEventListener('change', () => {
    $('browser-image-panel').hidden = browserMode() !== 'image';
    $('browser-json-panel').hidden = browserMode() !== 'json';
  }));

  let image = null;
  let imageLoading = Promise.resolve();
  $('browser-image').addEventListener('change', (event) => {
    const file = event.target.files[0];
    image = null;
    if (!file) return;
    imageLoading = createImageBitmap(file).then((bitmap) => {
      image = bitmap;
      studio.image = {name: file.name, width: bitmap.width, height: bitmap.height};
      $('browser-image-status').textContent = `${file.name}: ${bitmap.width}×${bitmap.height}, resized to the model's input.`;
    }, (err) => {
      throw new F2T.ModelError(`${file.name} is not an image this browser can read.`, err.message);
    });
    imageLoading.catch((err) => showError(err, $('browser-run')));
  });

  // One tensor per model input: random (seeded), the chosen image or the pasted JSON (one input).
  async function browserInputs(m) {
    const mode = browserMode();
    const shapes = m.inputs.map((t) => [1, ...t.shape.slice(1).map((d) => (d == null ? 1 : d))]);
    if (mode === 'random') {
      return m.inputs.map((t, i) => (t.dtype === 'int32'
        ? tf.randomUniform(shapes[i], 0, 10, 'int32', 42 + i) : tf.randomUniform(shapes[i], 0, 1, 'float32', 42 + i)));
    }
    if (m.inputs.length !== 1) throw new F2T.ModelError(`${mode === 'image' ? 'Image' : 'JSON'} input works for models with one input; choose Random.`);
    if (mode === 'image') {
      await imageLoading;  // a Run click right after choosing the file waits for its decoding
      if (!image) throw new F2T.ModelError('Choose an image file first.');
      const options = {invert: $('browser-image-invert').checked, scale: Number($('browser-image-scale').value)};
      return [F2T.imageTensor(image, m.inputs[0].shape, options, $('browser-image-preview'))];
    }
    const text = $('browser-input').value.trim();
    let value;
    try {
      value = JSON.parse(text);
    } catch (err) {
      throw new F2T.ModelError('The input is not valid JSON.', err.message);
    }
    const flat = Array.isArray(value) ? value.flat(Infinity) : [value];
    const size = shapes[0].reduce((a, b) => a * b, 1);
    if (flat.length !== size) throw new F2T.ModelError(`The input has ${flat.length} values; the model takes ${size} (shape ${shapes[0].slice(1).join('×')}).`);
    return [tf.tensor(flat, shapes[0], m.inputs[0].dtype)];
  }

  async function timeBackend(loaded, backend) {
    await F2T.useBackend(backend);
    const t0 = performance.now();
    const m = await F2T.buildModel(loaded);
    const buildMs = performance.now() - t0;
    let xs = [];
    try {
      xs = await browserInputs(m);
      const once = async () => {
        const start = performance.now();
        const out = m.predict(xs.length === 1 ? xs[0] : xs);
        const outs = Array.isArray(out) ? out : [out];
        const values = Array.from(await outs[0].data());  // the first output is shown and recorded
        outs.forEach((o) => o.dispose());
        return {ms: performance.now() - start, values};
      };
      const first = await once(); // warm-up: shader compilation, wasm memory growth
      const times = [];
      let last = first;
      for (let i = 0; i < 10; i++) { last = await once(); times.push(last.ms); }
      return {backend: tf.getBackend(), buildMs, firstMs: first.ms, medianMs: F2T.median(times), values: last.values, model: m};
    } catch (err) {
      m.dispose();
      throw err;
    } finally {
      xs.forEach((x) => x.dispose());
    }
  }

  $('browser-run').addEventListener('click', async () => {
    clearError();
    $('browser-run').disabled = true;
    setState('testing');
    const results = {};
    let shown = false;
    try {
      $('browser-status').textContent = 'Loading the model…';
      const loaded = await F2T.fetchModel(`/api/jobs/${studio.job.id}/model/model.json`);
      for (const backend of ['cpu', 'wasm', 'webgl']) {
        $('browser-status').textContent = `Running on ${backend}…`;
        try {
          const r = await timeBackend(loaded, backend);
          if (!shown) {
            table($('browser-layers'), [['#', 'num'], ['Layer'], ['Class'], ['Parameters', 'num']],
              r.model.layers.map((l, i) => [[String(i), 'num'], [l.name], [l.getClassName()], [count(l.countParams()), 'num']]));
            shown = true;
          }
          r.model.dispose();
          delete r.model;
          results[backend] = r;
        } catch (err) {
          results[backend] = {backend, error: err.detail || err.message};
        }
      }
      table($('timings'), [['Backend'], ['Build', 'num'], ['First call', 'num'], ['Median of 10', 'num'], ['Arg max', 'num']],
        Object.values(results).map((r) => (r.error ? [[r.backend], ['unavailable'], [''], [''], [r.error]]
          : [[r.backend], [F2T.formatMs(r.buildMs), 'num'], [F2T.formatMs(r.firstMs), 'num'], [F2T.formatMs(r.medianMs), 'num'], [String(r.values.indexOf(Math.max(...r.values))), 'num']])));
      $('timings').dataset.result = JSON.stringify(results);
      $('browser-status').textContent = `Ran in ${Object.keys(results).filter((b) => !results[b].error).join(', ')}.`;
      setState('tested');
    } catch (err) {
      $('browser-status').textContent = 'Could not load the model.';
      showError(err, $('browser-run'));
      setState('error');
    } finally {
      $('browser-run').disabled = false;
    }
  });
})();
