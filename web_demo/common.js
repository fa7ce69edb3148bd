// Shared by index.html and tester.html: checked model loading, backends, safe DOM output.
// Classic script (no modules, no build step): it defines the global `F2T`.
'use strict';

(function () {
  // Every failure the pages explain to the user. `detail` is shown under the message.
  class ModelError extends Error {
    constructor(message, detail) {
      super(message);
      this.name = 'ModelError';
      this.detail = detail || '';
    }
  }

  // Model text never goes through innerHTML: elements are built with textContent only.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === 'class') node.className = value;
      else if (key === 'text') node.textContent = value;
      else if (key.startsWith('data-')) node.setAttribute(key, String(value));
      else node[key] = value;
    }
    for (const child of children) {
      if (child == null) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  const BYTES_PER_ELEMENT = {float32: 4, int32: 4, bool: 1, uint8: 1, uint16: 2, float16: 2, complex64: 8};

  function elementCount(shape) {
    return shape.reduce((n, d) => n * d, 1);
  }

  // Bytes a manifest group needs, or null when it cannot be known (string tensors).
  function expectedGroupBytes(group) {
    let total = 0;
    for (const spec of group.weights) {
      const dtype = spec.quantization ? spec.quantization.dtype : spec.dtype;
      const size = BYTES_PER_ELEMENT[dtype];
      if (size == null || !Array.isArray(spec.shape)) return null;
      total += elementCount(spec.shape) * size;
    }
    return total;
  }

  function parseModelJson(text, where) {
    let doc;
    try {
      doc = JSON.parse(text);
    } catch (err) {
      throw new ModelError(`${where} is not valid JSON.`, err.message);
    }
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) {
      throw new ModelError(`${where} is not a JSON object.`, 'A TF.js model.json is an object with modelTopology and weightsManifest.');
    }
    const graph = isGraphModel(doc);
    if (!doc.modelTopology || typeof doc.modelTopology !== 'object') {
      throw new ModelError(`${where} has no modelTopology.`, 'It is not a TF.js LayersModel; convert the checkpoint with `python -m writer CKPT OUT`.');
    }
    if (!Array.isArray(doc.weightsManifest)) {
      // tfjs itself would silently keep random initial weights here.
      throw new ModelError(`${where} has no weightsManifest.`, 'Without it TensorFlow.js would run the model with random weights. Re-run the conversion.');
    }
    for (const [g, group] of doc.weightsManifest.entries()) {
      if (!group || !Array.isArray(group.paths) || !Array.isArray(group.weights)) {
        throw new ModelError(`${where}: weightsManifest[${g}] needs "paths" and "weights" lists.`);
      }
    }
    if (!graph) checkInboundNames(doc.modelTopology, where);
    return doc;
  }

  // A GraphModel (flax2tfjs --format graph-model, or a GraphDef with a node list) loads with tf.loadGraphModel.
  function isGraphModel(doc) {
    return doc.format === 'graph-model' || Boolean(doc.modelTopology && Array.isArray(doc.modelTopology.node));
  }

  // A GraphModel seen through the LayersModel members these pages use: inputs/outputs with a null
  // batch axis, their names, a parameter count; predict and dispose go to the GraphModel.
  function graphModelView(gm, doc) {
    const info = (t) => ({name: t.name, shape: (t.shape || []).map((d) => (d == null || d < 0 ? null : d)), dtype: t.dtype});
    const floats = Object.values(gm.weights).reduce((n, ts) => n + (ts[0].dtype === 'float32' ? ts[0].size : 0), 0);
    const signed = Object.entries((doc.signature && doc.signature.outputs) || {});
    const outputKeys = signed.map(([key]) => key);
    const DTYPES = {DT_FLOAT: 'float32', DT_INT32: 'int32', DT_BOOL: 'bool'};
    const fromSignature = (t, i) => (signed[i] ? {name: t.name, dtype: DTYPES[signed[i][1].dtype],
      shape: signed[i][1].tensorShape.dim.map((d) => Number(d.size))} : t);
    return {
      graph: true, name: 'GraphModel', layers: [], trainableWeights: [],
      nodes: doc.modelTopology.node.length,
      inputs: gm.inputs.map(info), outputs: gm.outputs.map((t, i) => info(fromSignature(t, i))),
      inputNames: gm.inputs.map((t) => t.name),
      outputNames: gm.outputs.map((t, i) => outputKeys[i] || t.name),
      countParams: () => floats,
      predict: (x) => gm.predict(x),
      dispose: () => gm.dispose(),
    };
  }

  // tfjs 4.22 loops forever on an inbound_nodes reference to a layer that does not exist,
  // freezing the tab, so refuse such a file before handing it over.
  function checkInboundNames(topology, where) {
    const config = (topology.model_config || topology).config;
    if (!config || !Array.isArray(config.layers)) return;
    const names = new Set(config.layers.map((l) => l && (l.name || (l.config && l.config.name))));
    const refs = [];
    for (const layer of config.layers) {
      for (const node of (layer && Array.isArray(layer.inbound_nodes) ? layer.inbound_nodes : [])) {
        if (Array.isArray(node)) for (const t of node) if (Array.isArray(t)) refs.push(t[0]);
      }
    }
    for (const key of ['input_layers', 'output_layers']) {
      for (const t of Array.isArray(config[key]) ? config[key] : []) if (Array.isArray(t)) refs.push(t[0]);
    }
    const unknown = refs.filter((name) => typeof name === 'string' && !names.has(name));
    if (unknown.length) {
      throw new ModelError(`${where} refers to layers that do not exist: ${[...new Set(unknown)].join(', ')}.`,
        'Fix inbound_nodes / input_layers / output_layers so every name is a layer of the model.');
    }
  }

  // Read every shard through `readFile(path) -> ArrayBuffer` and check the byte counts that
  // tfjs does not check (a 404 page or a short file would otherwise become garbage weights).
  async function readWeights(doc, readFile) {
    const buffers = [];
    const files = [];
    const warnings = [];
    for (const [g, group] of doc.weightsManifest.entries()) {
      let got = 0;
      for (const path of group.paths) {
        const data = await readFile(path);
        files.push({path, bytes: data.byteLength});
        buffers.push(data);
        got += data.byteLength;
      }
      const want = expectedGroupBytes(group);
      if (want != null && got < want) {
        throw new ModelError(`Weight group ${g + 1} is ${want - got} bytes short: its files (${group.paths.join(', ')}) hold ${got} bytes, the manifest needs ${want}.`,
          'A shard is truncated or belongs to another conversion. Copy the model folder again, or re-run the conversion.');
      }
      if (want != null && got > want) {
        warnings.push(`Weight group ${g + 1}: files hold ${got - want} bytes more than the manifest needs (${got} vs ${want}); the extra bytes are ignored.`);
      }
    }
    const weightData = new Uint8Array(buffers.reduce((n, b) => n + b.byteLength, 0));
    let offset = 0;
    for (const b of buffers) {
      weightData.set(new Uint8Array(b), offset);
      offset += b.byteLength;
    }
    return {weightData: weightData.buffer, files, warnings};
  }

  function artifactsOf(doc, weightData) {
    return {
      modelTopology: doc.modelTopology,
      weightSpecs: doc.weightsManifest.flatMap((g) => g.weights),
      weightData,
      format: doc.format,
      generatedBy: doc.generatedBy,
      convertedBy: doc.convertedBy,
      userDefinedMetadata: doc.userDefinedMetadata,
      trainingConfig: doc.trainingConfig,
      signature: doc.signature,
    };
  }

  function totalBytes(files) {
    return files.reduce((n, f) => n + f.bytes, 0);
  }

  // Fetch model.json and its shards over HTTP(S), checking every status code.
  async function fetchModel(url) {
    const absolute = new URL(url, document.baseURI);
    const response = await fetchChecked(absolute.href, 'model.json');
    const doc = parseModelJson(await response.text(), absolute.pathname.split('/').pop() || 'model.json');
    const weights = await readWeights(doc, async (path) => {
      // Like tfjs: shard paths are relative to model.json and inherit its ?query.
      const shardUrl = new URL(path, absolute);
      shardUrl.search = absolute.search;
      return (await fetchChecked(shardUrl.href, `weight file ${path}`)).arrayBuffer();
    });
    return {doc, source: absolute.href, ...weights, artifacts: artifactsOf(doc, weights.weightData)};
  }

  async function fetchChecked(url, what) {
    let response;
    try {
      response = await fetch(url, {cache: 'no-cache'});
    } catch (err) {
      throw new ModelError(`Could not download ${what} from ${url}.`, `${err.message}. Check the URL; another site must allow it with CORS headers.`);
    }
    if (!response.ok) {
      throw new ModelError(`Could not download ${what}: HTTP ${response.status} ${response.statusText} for ${url}.`,
        'A missing weight file means the model folder was copied or uploaded incompletely.');
    }
    return response;
  }

  // Load from local files (a picked folder or several picked files).
  async function readModelFiles(fileList) {
    const files = Array.from(fileList);
    const jsonFiles = files.filter((f) => f.name.endsWith('.json'));
    const modelFile = jsonFiles.find((f) => f.name === 'model.json') || (jsonFiles.length === 1 ? jsonFiles[0] : null);
    if (!modelFile) {
      throw new ModelError(jsonFiles.length ? `Several JSON files and none is named model.json: ${jsonFiles.map((f) => f.name).join(', ')}.` : 'No model.json among the chosen files.',
        'Choose the folder written by the converter, or model.json together with its .bin files.');
    }
    const doc = parseModelJson(await modelFile.text(), modelFile.name);
    const folder = relativeFolder(modelFile);
    const byPath = new Map();
    for (const f of files) {
      byPath.set(relativePath(f), f);
      if (!byPath.has(f.name)) byPath.set(f.name, f);
    }
    const weights = await readWeights(doc, async (path) => {
      const file = byPath.get(folder + path) || byPath.get(path) || byPath.get(path.split('/').pop());
      if (!file) {
        throw new ModelError(`Weight file ${path} is missing: it is listed in ${modelFile.name} but was not among the chosen files.`,
          'Choose the whole model folder, or select model.json together with every .bin file.');
      }
      return file.arrayBuffer();
    });
    return {doc, source: folder ? folder.replace(/\/$/, '') : modelFile.name, ...weights, artifacts: artifactsOf(doc, weights.weightData)};
  }

  function relativePath(file) {
    return file.webkitRelativePath || file.name;
  }

  function relativeFolder(file) {
    const rel = relativePath(file);
    return rel.slice(0, rel.length - file.name.length);
  }

  async function buildModel(loaded) {
    try {
      if (isGraphModel(loaded.doc)) {
        return graphModelView(await tf.loadGraphModel({load: async () => loaded.artifacts}), loaded.doc);
      }
      return await tf.loadLayersModel({load: async () => loaded.artifacts});
    } catch (err) {
      throw new ModelError('TensorFlow.js could not build the model.', err.message || String(err));
    }
  }

  let wasmConfigured = false;

  // Switch the TF.js backend; throws a ModelError when the browser lacks it.
  async function useBackend(name) {
    if (typeof tf === 'undefined') throw new ModelError('TensorFlow.js did not load.', 'vendor/tf.es2017.min.js is missing from the site; run `python scripts/build_demo.py`.');
    if (name === 'wasm' && !wasmConfigured && tf.wasm) {
      // Before the first use: the .wasm binaries sit beside the page, not on a CDN.
      tf.wasm.setWasmPaths(new URL('vendor/', document.baseURI).href);
      wasmConfigured = true;
    }
    let ok = false;
    let reason = '';
    try {
      ok = await tf.setBackend(name);
    } catch (err) {
      reason = err.message || String(err);
    }
    if (!ok) throw new ModelError(`The ${name} backend is not available in this browser.`, reason || 'Choose another backend.');
    await tf.ready();
    return tf.getBackend();
  }

  // The first backend of `names` that works.
  async function firstBackend(names) {
    const failures = [];
    for (const name of names) {
      try {
        return await useBackend(name);
      } catch (err) {
        failures.push(`${name}: ${err.detail || err.message}`);
      }
    }
    throw new ModelError('No TensorFlow.js backend works in this browser.', failures.join('; '));
  }

  // The CLI's rule (writer/term.py human_bytes, the reference): whole bytes below 1 KiB, then one
  // decimal of KiB, MiB or GiB, rounded as Python's format() rounds (an exact tie goes to the even
  // digit: 1280 B is "1.2 KiB", not toFixed's "1.3 KiB"). Integer arithmetic keeps it exact.
  // tests/test_studio_ui.py compares both on many sizes.
  function formatBytes(n) {
    n = Math.round(Number(n) || 0);
    if (n < 1024) return `${n} B`;
    const units = ['KiB', 'MiB', 'GiB'];
    let k = 0;
    while (k < units.length - 1 && n >= 1024 ** (k + 2)) k++;
    const d = 1024 ** (k + 1);
    let tenths = Math.floor((n * 10) / d);
    const twice = 2 * (n * 10 - tenths * d);
    if (twice > d || (twice === d && tenths % 2 === 1)) tenths += 1;
    return `${Math.floor(tenths / 10)}.${tenths % 10} ${units[k]}`;
  }

  // One image as a model input: resized to the input's height and width, grey (1 channel) or
  // RGB(A), scaled to 0..1, 0..255 or -1..1, optionally inverted (MNIST: white digit on black).
  // `canvas` shows what the model gets. Shared by the tester and the studio's in-page test.
  function imageTensor(image, inputShape, {invert = false, scale = 1} = {}, canvas = null) {
    const shape = inputShape.slice(1);
    const [h, w, c] = shape.length === 3 ? shape : shape.length === 2 ? [...shape, 1] : [];
    if (!h || !w || ![1, 3, 4].includes(c)) {
      const text = `[${inputShape.map((d) => (d == null ? 'null' : d)).join(', ')}]`;
      throw new ModelError(`The input shape ${text} is not an image (height, width, 1/3/4 channels).`, 'Use random or JSON input.');
    }
    const surface = canvas || document.createElement('canvas');
    surface.width = w;
    surface.height = h;
    surface.hidden = false;
    const c2d = surface.getContext('2d', {willReadFrequently: true});
    c2d.drawImage(image, 0, 0, w, h);
    const {data} = c2d.getImageData(0, 0, w, h);
    const values = new Float32Array(h * w * c);
    for (let i = 0; i < h * w; i++) {
      const px = [data[4 * i], data[4 * i + 1], data[4 * i + 2], data[4 * i + 3]];
      const chans = c === 1 ? [0.299 * px[0] + 0.587 * px[1] + 0.114 * px[2]] : px.slice(0, c);
      chans.forEach((v, k) => {
        let x = (invert ? 255 - v : v) / 255;
        x = scale === 255 ? x * 255 : scale === -1 ? x * 2 - 1 : x;
        values[i * c + k] = x;
      });
    }
    if (invert || scale !== 1) {
      // Show what the model gets rather than the file.
      const shown = c2d.createImageData(w, h);
      for (let i = 0; i < h * w; i++) {
        const v = c === 1 ? values[i] : values[i * c];
        const g = Math.round(255 * (scale === 255 ? v / 255 : scale === -1 ? (v + 1) / 2 : v));
        shown.data.set([g, g, g, 255], 4 * i);
      }
      c2d.putImageData(shown, 0, 0);
    }
    return tf.tensor(values, [1, ...shape], 'float32');
  }

  function formatMs(ms) {
    return ms < 10 ? `${ms.toFixed(2)} ms` : `${ms.toFixed(1)} ms`;
  }

  function median(values) {
    const s = [...values].sort((a, b) => a - b);
    const mid = s.length >> 1;
    return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
  }

  // Show `err` in `box` (an element with role="alert"), escaped.
  function showError(box, err) {
    box.replaceChildren(
      el('strong', {text: err instanceof ModelError ? err.message : `Unexpected error: ${err && err.message ? err.message : err}`}),
      err && err.detail ? el('span', {class: 'detail', text: err.detail}) : null,
    );
    box.hidden = false;
  }

  // Never a blank page: anything that escapes the handlers ends up in the alert box.
  function catchAll(box, onError) {
    window.addEventListener('error', (event) => {
      showError(box, event.error || new Error(event.message));
      if (onError) onError();
    });
    window.addEventListener('unhandledrejection', (event) => {
      showError(box, event.reason);
      if (onError) onError();
    });
  }

  window.F2T = {
    ModelError, el, imageTensor, parseModelJson, fetchModel, readModelFiles, buildModel, useBackend,
    firstBackend, expectedGroupBytes, totalBytes, formatBytes, formatMs, median, showError, catchAll,
  };
})();
