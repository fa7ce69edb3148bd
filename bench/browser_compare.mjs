// Paired latency of several models, batch 1, in headless Chromium or in Node: interleaved blocks.
//
//   node bench/browser_compare.mjs CONFIG.json      (or the JSON itself as the argument)
//   CONFIG = {"models": {"name": "/abs/model_dir", ...}, "runtime": "chromium" | "node",
//             "backend": "wasm", "rounds": 10, "block": 20, "warmup": 5, "profile": false}
//
// Any TF.js model folder: a LayersModel, or a GraphModel when its model.json says
// "format": "graph-model" (tf.loadGraphModel). A path ending in .onnx runs in onnxruntime-web
// (wasm, one thread) when node_modules/onnxruntime-web is installed (npm ci; or the package folder
// named by FLAX2TFJS_ORT_DIR, e.g. a private `npm install --prefix` copy); its inputs are
// those of the first TF.js model of the config, by position. Every model gets the same
// deterministic inputs (float: pseudo-random in [0, 1); int32: 0 or 1, valid token ids, masks
// and segment ids). After `warmup` calls each, the models run in turn, `block` calls each, for
// `rounds` rounds (A B C A B C ...): a slow moment of the machine hits every model of its round,
// and the per-round ratio to the first model cancels it.
//
// Prints one JSON object: {"runtime", "versions", "load_avg": [before, after], "models": {name:
//   {"kind", "load_ms", "block_ms": [per-call mean of each block], "output": [first values],
//   "profile" (with "profile": true, TF.js models only): {"profiled_calls", "kernel_ms", "kernels",
//   "top": [{"op", "ms" (median over the profiled calls), "calls" (per call), "macs" (multiply-adds
//   per call of a matrix product, else 0)}, ...]}}},
//   "ratios": {name: [per round, model / first model]}}.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import {createRequire} from 'node:module';
import {fileURLToPath} from 'node:url';

const require = createRequire(import.meta.url);
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];
const TYPES = {'.js': 'text/javascript', '.mjs': 'text/javascript', '.json': 'application/json',
  '.wasm': 'application/wasm', '.bin': 'application/octet-stream', '.html': 'text/html'};

const arg = process.argv[2];
if (!arg) {
  console.error('usage: node bench/browser_compare.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(arg.trim().startsWith('{') ? arg : fs.readFileSync(arg, 'utf8'));
const settings = {backend: config.backend ?? 'wasm', rounds: config.rounds ?? 10, block: config.block ?? 20,
  warmup: config.warmup ?? 5, profile: config.profile ?? false};
const ORT_PACKAGE = process.env.FLAX2TFJS_ORT_DIR ? path.resolve(process.env.FLAX2TFJS_ORT_DIR)
  : path.join(ROOT, 'node_modules/onnxruntime-web');
const ORT_DIR = path.join(ORT_PACKAGE, 'dist/');
const hasOrt = fs.existsSync(ORT_DIR);
const specs = Object.entries(config.models).map(([name, where]) => {
  const file = path.resolve(where);
  if (file.endsWith('.onnx')) return {name, kind: 'onnx', file};
  const format = JSON.parse(fs.readFileSync(path.join(file, 'model.json'), 'utf8')).format;
  return {name, kind: format === 'graph-model' ? 'graph' : 'layers', file};
}).filter((s) => s.kind !== 'onnx' || hasOrt || console.error(`skipping ${s.name}: onnxruntime-web not installed`));

// Runs in the page (Chromium) or in Node: `env` loads models and runs them.
async function measure(env, specs, settings) {
  const {tf} = env;
  const fill = (shape, dtype) => {
    const size = shape.reduce((a, b) => a * b, 1);
    const data = dtype === 'int32' ? new Int32Array(size) : new Float32Array(size);
    let s = 12345;
    for (let i = 0; i < size; i++) {
      s = (s * 1103515245 + 12345) % 2147483648;
      data[i] = dtype === 'int32' ? (s >> 16) & 1 : s / 2147483648;
    }
    return {data, shape, dtype};
  };
  let signature = null; // [{shape, dtype}] of the first TF.js model: the inputs every model gets
  const runners = [];
  for (const spec of specs) {
    const t0 = performance.now();
    let run;
    if (spec.kind === 'onnx') {
      const session = await env.ortSession(spec);
      const names = session.inputNames;
      const feeds = Object.fromEntries(names.map((n, i) => [n, env.ortTensor(signature[i])]));
      run = async () => {
        const out = await session.run(feeds);
        return out[session.outputNames[0]].data;
      };
    } else {
      const model = spec.kind === 'graph' ? await env.loadGraph(spec) : await env.loadLayers(spec);
      const inputs = spec.kind === 'graph' ? model.inputs : model.inputs.map((t) => ({shape: t.shape, dtype: t.dtype}));
      const sig = inputs.map((t) => ({shape: t.shape.map((d) => (d == null || d < 0 ? 1 : d)), dtype: t.dtype}));
      signature ??= sig;
      // A user's call: tensors made from typed arrays (copied into the backend, as ORT copies its feeds in
      // every session.run), one execute (a GraphModel without control flow; predict for a LayersModel),
      // the first output read back, everything disposed.
      const filled = sig.map((t) => fill(t.shape, t.dtype));
      run = async () => {
        const xs = filled.map((f) => tf.tensor(f.data, f.shape, f.dtype));
        const y = spec.kind === 'graph' ? model.execute(xs.length === 1 ? xs[0] : xs) : model.predict(xs.length === 1 ? xs[0] : xs);
        const first = Array.isArray(y) ? y[0] : y;
        const values = await first.data();
        tf.dispose([y, xs]);
        return values;
      };
    }
    runners.push({spec, run, load_ms: performance.now() - t0});
  }
  const out = {};
  for (const r of runners) {
    let values;
    for (let i = 0; i < settings.warmup; i++) values = await r.run();
    out[r.spec.name] = {kind: r.spec.kind, load_ms: r.load_ms, block_ms: [], output: Array.from(values).slice(0, 8)};
  }
  for (let round = 0; round < settings.rounds; round++) {
    for (const r of runners) {
      const t = performance.now();
      for (let i = 0; i < settings.block; i++) await r.run();
      out[r.spec.name].block_ms.push((performance.now() - t) / settings.block);
    }
  }
  // Multiply-adds of a matrix-product kernel, from its shapes (0 for other kernels): a [.., m, k] by
  // [.., k, n] product gives [.., m, n], so size(a) * size(b) / size(out) = batch * k * k.
  const matmulMacs = (k) => {
    if (!/MatMul/.test(k.name) || !k.inputShapes || k.inputShapes.length < 2 || !k.outputShapes) return 0;
    const size = (s) => s.reduce((x, y) => x * y, 1);
    const out = k.outputShapes[0];
    const batch = size(out.slice(0, -2));
    const inner = Math.sqrt(size(k.inputShapes[0]) * size(k.inputShapes[1]) / size(out) / batch);
    return Math.round(size(out) * inner);
  };
  if (settings.profile) {  // a few more (warm) calls of each TF.js model under tf.profile: where its time goes
    const calls = 5;  // per op, the median over calls: one call's figures carry a GC pause or a busy core
    for (const r of runners) {
      if (r.spec.kind === 'onnx') continue;
      const perCall = [];
      for (let c = 0; c < calls; c++) {
        const info = await tf.profile(() => r.run());
        const byOp = {};
        for (const k of info.kernels) {
          if (k.name.endsWith('__op')) continue;  // an op's wrapper (custom gradient) around the kernel listed too
          byOp[k.name] ??= {ms: 0, calls: 0, macs: 0};
          byOp[k.name].ms += k.kernelTimeMs;
          byOp[k.name].calls += 1;
          byOp[k.name].macs += matmulMacs(k);
        }
        perCall.push(byOp);
      }
      const median = (xs) => xs.slice().sort((a, b) => a - b)[Math.floor(xs.length / 2)];
      const ops = Object.keys(perCall[0]).map((op) => ({op, calls: perCall[0][op].calls, macs: perCall[0][op].macs,
        ms: median(perCall.map((p) => (p[op] ? p[op].ms : 0)))})).sort((a, b) => b.ms - a.ms);
      out[r.spec.name].profile = {profiled_calls: calls, kernel_ms: ops.reduce((a, o) => a + o.ms, 0),
        kernels: ops.reduce((a, o) => a + o.calls, 0), top: ops.slice(0, 8)};
    }
  }
  return out;
}

function summarize(results) {
  const names = Object.keys(results);
  const base = results[names[0]].block_ms;
  const ratios = Object.fromEntries(names.map((n) => [n, results[n].block_ms.map((v, i) => v / base[i])]));
  return ratios;
}

async function inNode() {
  const tf = require('@tensorflow/tfjs');
  const wasm = require('@tensorflow/tfjs-backend-wasm');
  wasm.setWasmPaths(path.join(ROOT, 'node_modules/@tensorflow/tfjs-backend-wasm/dist/'));
  if (!(await tf.setBackend(settings.backend))) throw new Error(`backend ${settings.backend} failed`);
  await tf.ready();
  const fromFolder = (dir) => {
    const json = JSON.parse(fs.readFileSync(path.join(dir, 'model.json'), 'utf8'));
    const specsOut = json.weightsManifest.flatMap((g) => g.weights);
    const buffers = json.weightsManifest.flatMap((g) => g.paths.map((p) => fs.readFileSync(path.join(dir, p))));
    const all = Buffer.concat(buffers);
    return tf.io.fromMemory({modelTopology: json.modelTopology, weightSpecs: specsOut,
      weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength), format: json.format,
      signature: json.signature, userDefinedMetadata: json.userDefinedMetadata});
  };
  let ort = null;
  const env = {
    tf,
    loadLayers: (spec) => tf.loadLayersModel(fromFolder(spec.file)),
    loadGraph: (spec) => tf.loadGraphModel(fromFolder(spec.file)),
    ortSession: async (spec) => {
      ort ??= require(ORT_PACKAGE);
      ort.env.wasm.numThreads = 1;
      const data = fs.existsSync(spec.file + '.data')
        ? [{path: path.basename(spec.file) + '.data', data: new Uint8Array(fs.readFileSync(spec.file + '.data'))}] : [];
      return ort.InferenceSession.create(new Uint8Array(fs.readFileSync(spec.file)),
        {executionProviders: ['wasm'], externalData: data});
    },
    ortTensor: (t) => new ort.Tensor(t.dtype === 'int32' ? 'int32' : 'float32',
      t.dtype === 'int32' ? fillInt(t.shape) : fillFloat(t.shape), t.shape),
  };
  const models = await measure(env, specs, settings);
  return {versions: {tfjs: tf.version.tfjs, node: process.version}, models};
}

function fillInt(shape) {
  const size = shape.reduce((a, b) => a * b, 1);
  const data = new Int32Array(size);
  let s = 12345;
  for (let i = 0; i < size; i++) { s = (s * 1103515245 + 12345) % 2147483648; data[i] = (s >> 16) & 1; }
  return data;
}

function fillFloat(shape) {
  const size = shape.reduce((a, b) => a * b, 1);
  const data = new Float32Array(size);
  let s = 12345;
  for (let i = 0; i < size; i++) { s = (s * 1103515245 + 12345) % 2147483648; data[i] = s / 2147483648; }
  return data;
}

async function inChromium() {
  const {chromium} = require('playwright-core');
  const mounts = {
    '/tfjs/': path.join(ROOT, 'node_modules/@tensorflow/tfjs/dist/'),
    '/wasm/': path.join(ROOT, 'node_modules/@tensorflow/tfjs-backend-wasm/dist/'),
    '/ort/': ORT_DIR,
  };
  specs.forEach((s, i) => {
    mounts[`/m${i}/`] = (s.kind === 'onnx' ? path.dirname(s.file) : s.file) + '/';
    s.url = s.kind === 'onnx' ? `/m${i}/${path.basename(s.file)}` : `/m${i}/model.json`;
    if (s.kind === 'onnx' && fs.existsSync(s.file + '.data')) s.externalData = `${s.url}.data`;
  });
  const page = `<!doctype html><meta charset="utf-8"><title>bench</title>
<script src="/tfjs/tf.min.js"></script><script src="/wasm/tf-backend-wasm.min.js"></script>
${hasOrt ? '<script src="/ort/ort.wasm.min.js"></script>' : ''}`;
  const server = http.createServer((req, res) => {
    const url = decodeURIComponent(new URL(req.url, 'http://x').pathname);
    if (url === '/') {
      res.writeHead(200, {'content-type': 'text/html'});
      res.end(page);
      return;
    }
    for (const [prefix, dir] of Object.entries(mounts)) {
      if (!url.startsWith(prefix)) continue;
      const file = path.resolve(dir, url.slice(prefix.length));
      if (!file.startsWith(dir)) break;
      fs.readFile(file, (err, data) => {
        if (err) { res.writeHead(404); res.end(); return; }
        res.writeHead(200, {'content-type': TYPES[path.extname(file)] || 'application/octet-stream'});
        res.end(data);
      });
      return;
    }
    res.writeHead(404);
    res.end();
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'f2t-compare-chromium-'));
  let context;
  try {
    context = await chromium.launchPersistentContext(profile, {executablePath: CHROMIUM, headless: true, args: FLAGS});
    const tab = await context.newPage();
    tab.on('pageerror', (e) => console.error(`[page] ${e.message}`));
    await tab.goto(`http://127.0.0.1:${server.address().port}/`);
    const models = await tab.evaluate(async ({source, specs, settings}) => {
      const tf = window.tf;
      if (settings.backend === 'wasm') tf.wasm.setWasmPaths('/wasm/');
      if (!(await tf.setBackend(settings.backend))) throw new Error(`backend ${settings.backend} failed`);
      await tf.ready();
      const fill = (shape, float) => {
        const size = shape.reduce((a, b) => a * b, 1);
        let s = 12345;
        const out = float ? new Float32Array(size) : new Int32Array(size);
        for (let i = 0; i < size; i++) {
          s = (s * 1103515245 + 12345) % 2147483648;
          out[i] = float ? s / 2147483648 : (s >> 16) & 1;
        }
        return out;
      };
      const env = {
        tf,
        loadLayers: (spec) => tf.loadLayersModel(spec.url),
        loadGraph: (spec) => tf.loadGraphModel(spec.url),
        ortSession: (spec) => {
          window.ort.env.wasm.numThreads = 1;
          window.ort.env.wasm.wasmPaths = '/ort/';
          const externalData = spec.externalData ? [{path: spec.externalData.split('/').pop(), data: spec.externalData}] : [];
          return window.ort.InferenceSession.create(spec.url, {executionProviders: ['wasm'], externalData});
        },
        ortTensor: (t) => new window.ort.Tensor(t.dtype === 'int32' ? 'int32' : 'float32',
          fill(t.shape, t.dtype !== 'int32'), t.shape),
      };
      const run = new Function('return ' + source)();
      return run(env, specs, settings);
    }, {source: measure.toString(), specs, settings});
    const versions = {chromium: context.browser()?.version() ?? null,
      tfjs: await tab.evaluate(() => window.tf.version.tfjs)};
    return {versions, models};
  } finally {
    if (context) await context.close();
    fs.rmSync(profile, {recursive: true, force: true});
    server.close();
  }
}

const before = os.loadavg()[0];
const result = config.runtime === 'node' ? await inNode() : await inChromium();
const ratios = summarize(result.models);
process.stdout.write(JSON.stringify({runtime: config.runtime ?? 'chromium', ...settings, versions: result.versions,
  load_avg: [before, os.loadavg()[0]], models: result.models, ratios}) + '\n');
