// Inference latency of TF.js LayersModels and GraphModels in headless Chromium (cpu, wasm, webgl backends).
//
//   node bench/browser_latency.mjs CONFIG.json      (or the JSON itself as the argument)
//   CONFIG = {"models": {"name": "/abs/model_dir", ...}, "backends": ["cpu", "wasm", "webgl"],
//             "batches": [1, 32], "warmup": 5, "repeat": 30, "budget_ms": 8000, "min_repeat": 10}
//   (a configuration stops after min_repeat timed runs once budget_ms have passed)
//
// Prints one JSON object on stdout: {"chromium": version, "tfjs": version, "results": [
//   {"model", "backend", "batch", "load_ms", "predict_ms": [...], "max_abs_diff_vs_cpu"}]}.
// The page, tfjs and the models are served by a local HTTP server (plain static hosting, no
// cross-origin isolation headers, so the wasm backend runs SIMD without threads, as on most
// static hosts). Chromium runs with the launch flags of /work/shared/MISSION.md and a fresh
// profile; WebGL runs on SwiftShader (software), since the machine has no GPU.
import fs from 'node:fs';
import http from 'node:http';
import os from 'node:os';
import path from 'node:path';
import {createRequire} from 'node:module';
import {fileURLToPath} from 'node:url';

const require = createRequire(import.meta.url);
const {chromium} = require('playwright-core');

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
const FLAGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  // WebGL on SwiftShader needs these once the GPU is disabled.
  '--use-angle=swiftshader', '--enable-unsafe-swiftshader',
];
const TYPES = {'.js': 'text/javascript', '.json': 'application/json', '.wasm': 'application/wasm',
  '.bin': 'application/octet-stream', '.html': 'text/html'};

const arg = process.argv[2];
if (!arg) {
  console.error('usage: node bench/browser_latency.mjs CONFIG.json');
  process.exit(2);
}
const config = JSON.parse(arg.trim().startsWith('{') ? arg : fs.readFileSync(arg, 'utf8'));

const mounts = {
  '/tfjs/': path.join(ROOT, 'node_modules/@tensorflow/tfjs/dist/'),
  '/wasm/': path.join(ROOT, 'node_modules/@tensorflow/tfjs-backend-wasm/dist/'),
};
for (const [name, dir] of Object.entries(config.models)) mounts[`/models/${name}/`] = path.resolve(dir) + '/';

const PAGE = `<!doctype html><meta charset="utf-8"><title>bench</title>
<script src="/tfjs/tf.min.js"></script><script src="/wasm/tf-backend-wasm.min.js"></script>`;

function serve(req, res) {
  const url = decodeURIComponent(new URL(req.url, 'http://x').pathname);
  if (url === '/' || url === '/index.html') {
    res.writeHead(200, {'content-type': 'text/html'});
    res.end(PAGE);
    return;
  }
  for (const [prefix, dir] of Object.entries(mounts)) {
    if (!url.startsWith(prefix)) continue;
    const file = path.resolve(dir, url.slice(prefix.length));
    if (!file.startsWith(dir)) break; // no escaping the mounted folder
    fs.readFile(file, (err, data) => {
      if (err) {
        res.writeHead(404);
        res.end();
        return;
      }
      res.writeHead(200, {'content-type': TYPES[path.extname(file)] || 'application/octet-stream'});
      res.end(data);
    });
    return;
  }
  res.writeHead(404);
  res.end();
}

// Runs inside the page.
async function measure({name, backend, batches, warmup, repeat, budgetMs, minRepeat}) {
  const tf = window.tf;
  if (backend === 'wasm') tf.wasm.setWasmPaths('/wasm/');
  if (!(await tf.setBackend(backend))) throw new Error(`backend ${backend} failed to initialise`);
  await tf.ready();
  const t0 = performance.now();
  const url = `/models/${name}/model.json`;
  // A GraphModel (format "graph-model") loads with tf.loadGraphModel; its batch axis is -1.
  const graph = (await (await fetch(url)).json()).format === 'graph-model';
  const model = graph ? await tf.loadGraphModel(url) : await tf.loadLayersModel(url);
  const loadMs = performance.now() - t0;
  const out = [];
  for (const batch of batches) {
    // Deterministic pseudo-random values (the same on every backend): pixels in 0..1, ids/masks 0 or 1.
    let s = 12345;
    const xs = model.inputs.map((input) => {
      const shape = input.shape.map((d) => (d == null || d < 0 ? batch : d));
      const size = shape.reduce((a, b) => a * b, 1);
      const int = input.dtype === 'int32';
      const data = int ? new Int32Array(size) : new Float32Array(size);
      for (let i = 0; i < size; i++) {
        s = (s * 1103515245 + 12345) % 2147483648;
        data[i] = int ? Math.floor((s / 2147483648) * 2) : s / 2147483648;
      }
      return tf.tensor(data, shape, int ? 'int32' : 'float32');
    });
    const x = xs.length === 1 ? xs[0] : xs;
    const run = () => { const y = model.predict(x); return Array.isArray(y) ? y[0] : y; };
    let first = null;
    for (let i = 0; i < warmup; i++) {
      const y = run();
      const values = await y.data();
      if (first == null) first = Array.from(values);
      y.dispose();
    }
    const times = [];
    const start = performance.now();
    for (let i = 0; i < repeat; i++) {
      // Slow configurations (cpu/webgl at batch 32) stop after the time budget.
      if (i >= minRepeat && performance.now() - start > budgetMs) break;
      const t = performance.now();
      const y = run();
      await y.data(); // reading back syncs webgl, and is part of what a page pays
      times.push(performance.now() - t);
      y.dispose();
    }
    tf.dispose(xs);
    out.push({batch, predict_ms: times, output: first, backend: tf.getBackend()});
  }
  model.dispose();
  return {loadMs, out};
}

const server = http.createServer(serve);
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const base = `http://127.0.0.1:${server.address().port}`;
const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'f2t-bench-chromium-'));
let context;
try {
  context = await chromium.launchPersistentContext(profile, {executablePath: CHROMIUM, headless: true, args: FLAGS});
  const results = [];
  let versions = null;
  for (const name of Object.keys(config.models)) {
    const reference = {};
    for (const backend of config.backends) {
      // A fresh page per backend: no state (textures, wasm memory) leaks between them.
      const page = await context.newPage();
      page.on('pageerror', (e) => console.error(`[page] ${e.message}`));
      await page.goto(base + '/');
      versions ??= await page.evaluate(() => ({tfjs: window.tf.version.tfjs, userAgent: navigator.userAgent}));
      const {loadMs, out} = await page.evaluate(measure, {
        name, backend, batches: config.batches, warmup: config.warmup ?? 5, repeat: config.repeat ?? 30,
        budgetMs: config.budget_ms ?? Infinity, minRepeat: config.min_repeat ?? 5,
      });
      for (const r of out) {
        const key = String(r.batch);
        if (backend === 'cpu') reference[key] = r.output;
        const ref = reference[key];
        const diff = ref ? Math.max(...r.output.map((v, i) => Math.abs(v - ref[i]))) : null;
        results.push({model: name, backend: r.backend, batch: r.batch, load_ms: loadMs,
          predict_ms: r.predict_ms, max_abs_diff_vs_cpu: diff});
      }
      await page.close();
    }
  }
  const chromiumVersion = context.browser()?.version() ?? null;
  process.stdout.write(JSON.stringify({chromium: chromiumVersion, ...versions, results}) + '\n');
} finally {
  if (context) await context.close();
  fs.rmSync(profile, {recursive: true, force: true});
  server.close();
}
