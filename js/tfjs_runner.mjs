// Long-lived Node process that loads LayersModels from disk with real @tensorflow/tfjs 4.22
// and runs them, driven by writer/tfjs_node.py.
//
// Protocol: JSON lines. One request per stdin line, one response per stdout line, in order.
// Logs (and anything tfjs prints) go to stderr only, so stdout stays parseable.
//
//   {"id":1,"cmd":"predict","model":"/abs/out/model.json","backend":"cpu","repeat":3,
//    "inputs":[{"shape":[2,4],"dtype":"float32","data":"<base64 little-endian>"}]}
//   -> {"id":1,"ok":true,"outputs":[{"shape":[2,3],"dtype":"float32","data":"..."}],
//       "load_ms":4.1,"predict_ms":[1.2,0.3,0.3],"backend":"cpu"}
//   {"id":2,"cmd":"summary","model":"/abs/out/model.json"}
//   -> {"id":2,"ok":true,"summary":{"layers":[...],"inputs":[...],"outputs":[...],"metadata":{...}}}
//   {"id":3,"cmd":"version"} -> {"id":3,"ok":true,"tfjs":"4.22.0","node":"v20...."}
//   {"id":4,"cmd":"memory"}  -> {"id":4,"ok":true,"num_tensors":0,"num_bytes":0,"backend":"cpu"}
//   any failure -> {"id":..,"ok":false,"error":"<tfjs message>"}; the process keeps serving.
//
// Nothing is cached between requests (the model files may have been rewritten); only the
// initialised backends are reused.
//
// Where TF.js comes from (argv: --tfjs auto|npm|bundle --bundle DIR):
//   npm     @tensorflow/tfjs and -backend-wasm from node_modules above this file (a checkout
//           after `npm ci`; what the tests use);
//   bundle  the browser build vendored for the web demo (DIR holds tf.es2017.min.js,
//           tf-backend-wasm.es2017.min.js and the .wasm files; what an installed wheel uses);
//   auto    npm when it resolves, else bundle (the default).
// Both are tfjs 4.22.0; `version` answers which one was loaded.
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import { readFile, realpath, stat } from 'node:fs/promises';
import path from 'node:path';
import os from 'node:os';
import readline from 'node:readline';
import { performance } from 'node:perf_hooks';

// tfjs and the wasm backend ship CommonJS node builds; requiring both through one
// `require` guarantees they share a single tfjs-core instance (the backend registers itself
// into it).
const require = createRequire(import.meta.url);

// Keep stdout for protocol lines only: tfjs (and its dependencies) log with console.*.
const log = (...args) => process.stderr.write(args.map(String).join(' ') + '\n');
console.log = log;
console.info = log;
console.warn = log;
console.debug = log;

function option(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 && i + 1 < process.argv.length ? process.argv[i + 1] : fallback;
}

const tfjsMode = option('tfjs', 'auto');
const bundleDir = option('bundle', null);

function resolvable(name) {
  try {
    require.resolve(name);
    return true;
  } catch (e) {
    return false;
  }
}

// A UMD browser bundle evaluated as CommonJS, with `deps` standing in for its imports
// (the wasm bundle imports '@tensorflow/tfjs-core', which the tfjs bundle provides).
function loadUmd(file, deps) {
  const code = readFileSync(file, 'utf8');
  const module = { exports: {} };
  const req = (name) => (name in deps ? deps[name] : require(name));
  new Function('exports', 'require', 'module', '__filename', '__dirname', code)(
    module.exports, req, module, file, path.dirname(file));
  return module.exports;
}

function loadTfjs() {
  const npm = tfjsMode === 'npm' || (tfjsMode === 'auto' &&
    resolvable('@tensorflow/tfjs') && resolvable('@tensorflow/tfjs-backend-wasm'));
  if (npm) {
    return {
      source: 'npm',
      tf: require('@tensorflow/tfjs'),
      wasm: () => require('@tensorflow/tfjs-backend-wasm'),
      // In Node a plain directory path (with trailing slash) works: Emscripten reads it with fs.
      wasmDir: () => path.join(path.dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist'),
    };
  }
  if (tfjsMode !== 'auto' && tfjsMode !== 'bundle') {
    log(`tfjs_runner: --tfjs ${tfjsMode} (expected auto, npm or bundle)`);
    process.exit(2);
  }
  if (!bundleDir) {
    log('tfjs_runner: @tensorflow/tfjs is not in node_modules and no --bundle DIR was given');
    process.exit(2);
  }
  const tf = loadUmd(path.join(bundleDir, 'tf.es2017.min.js'), {});
  let wasm = null;
  return {
    source: 'bundle',
    tf,
    wasm: () => (wasm ??= loadUmd(path.join(bundleDir, 'tf-backend-wasm.es2017.min.js'),
      { '@tensorflow/tfjs-core': tf })),
    wasmDir: () => bundleDir,
  };
}

const tfjs = loadTfjs();
const tf = tfjs.tf;

if (os.endianness() !== 'LE') {
  // The wire format and the weight files are little-endian; typed arrays use host order.
  log('tfjs_runner: big-endian host is not supported');
  process.exit(3);
}

class RequestError extends Error {}

// ---------------------------------------------------------------------------------------
// Backends

let wasmReady = false;

function setupWasm() {
  if (wasmReady) return;
  tfjs.wasm().setWasmPaths(path.resolve(tfjs.wasmDir()) + path.sep);
  wasmReady = true;
}

async function useBackend(name) {
  if (name !== 'cpu' && name !== 'wasm') {
    throw new RequestError(`unknown backend '${name}' (expected "cpu" or "wasm")`);
  }
  if (name === 'wasm') setupWasm();
  if (tf.getBackend() !== name) {
    // setBackend returns false (and only logs) when the backend fails to initialise.
    const ok = await tf.setBackend(name);
    if (!ok || tf.getBackend() !== name) {
      throw new RequestError(`tfjs backend '${name}' failed to initialise (see runner stderr)`);
    }
  }
  await tf.ready();
}

// ---------------------------------------------------------------------------------------
// Topology guard: tfjs-layers' Container.fromConfig loops forever when a call node can
// never be built (unknown inbound layer, node index that never appears, cycle). We replay
// its queue algorithm on the JSON, with counters instead of layer calls, and report the
// stuck nodes instead of hanging.

const pick = (obj, snake, camel) => (obj[snake] !== undefined ? obj[snake] : obj[camel]);

function checkContainer(config, where) {
  const layers = config.layers;
  if (!Array.isArray(layers)) return;
  const isFunctional = layers.some(
    (l) => l && typeof l === 'object' && pick(l, 'inbound_nodes', 'inboundNodes') !== undefined);
  if (isFunctional) checkFunctional(config, layers, where);
  for (const l of layers) checkNested(l, where);
}

function checkNested(layer, where) {
  if (!layer || typeof layer !== 'object' || !layer.config || typeof layer.config !== 'object') return;
  const name = layer.name ?? layer.config.name ?? layer.class_name;
  if (Array.isArray(layer.config.layers)) checkContainer(layer.config, `${where} > ${name}`);
  // Wrappers (Bidirectional, TimeDistributed) hold one inner layer, possibly a model.
  if (layer.config.layer) checkNested(layer.config.layer, `${where} > ${name}`);
}

function checkFunctional(config, layers, where) {
  // Mirrors Container.fromConfig: `created` is keyed by the entry-level name, the queue by
  // the layer's own name (config.name); a layer gets one node per processed call, InputLayer
  // and nested models start with one node of their own.
  const created = Object.create(null);
  const queue = Object.create(null);
  let anon = 0;
  const objs = layers.map((entry) => {
    if (!entry || typeof entry !== 'object') return null;
    const cfg = entry.config && typeof entry.config === 'object' ? entry.config : {};
    const own = cfg.name != null ? String(cfg.name) : `\u0000anon${anon++}`;
    const cls = entry.class_name ?? entry.className;
    const initial = cls === 'InputLayer' || Array.isArray(cfg.layers) ? 1 : 0;
    return { entry, own, count: initial };
  });
  for (const obj of objs) {
    if (obj == null) return; // malformed: let tfjs report it
    const nodes = pick(obj.entry, 'inbound_nodes', 'inboundNodes');
    if (!Array.isArray(nodes)) return; // tfjs throws on these itself
    created[String(obj.entry.name)] = obj;
    for (const node of nodes) {
      if (!Array.isArray(node)) return; // "Corrupted configuration, expected array for nodeData"
      for (const t of node) if (!Array.isArray(t)) {
        throw new RequestError(
          `${where}: layer '${obj.entry.name}' has an inbound tensor that is not a list ` +
          `[layer_name, node_index, tensor_index, kwargs]: ${JSON.stringify(t)}`);
      }
      (queue[obj.own] ??= []).push(node);
    }
  }
  const names = new Set(Object.keys(created));
  // Same test as processNode: the inbound layer exists and already has that node.
  const available = (t) => String(t[0]) in created && !(created[String(t[0])].count <= t[1]);
  for (;;) {
    if (Object.keys(queue).length === 0) break;
    let progress = false;
    for (const entry of layers) {
      const obj = created[String(entry.name)];
      if (obj === undefined || !(obj.own in queue)) continue;
      const pending = queue[obj.own];
      delete queue[obj.own];
      for (const node of pending) {
        if (node.every(available)) {
          if (node.length > 0) obj.count += 1;
          progress = true;
        } else {
          (queue[obj.own] ??= []).push(node);
        }
      }
    }
    if (!progress) {
      const stuck = [];
      for (const [own, nodes] of Object.entries(queue)) {
        for (const node of nodes) {
          for (const t of node.filter((t) => !available(t))) {
            const src = String(t[0]);
            const why = !names.has(src)
              ? `unknown layer '${src}'`
              : `node ${t[1]} of '${src}' is never created`;
            stuck.push(`layer '${own.replace('\u0000', '')}' <- [${JSON.stringify(t[0])}, ${t[1]}, ${t[2]}]: ${why}`);
          }
        }
      }
      throw new RequestError(
        `${where}: inbound_nodes can never be resolved (tfjs would hang forever): ` +
        stuck.slice(0, 10).join('; ') + (stuck.length > 10 ? `; ... ${stuck.length - 10} more` : ''));
    }
  }
  for (const key of ['input_layers', 'output_layers']) {
    const refs = pick(config, key, key.replace('_l', 'L'));
    if (!Array.isArray(refs)) continue;
    if (refs.length > 0 && !Array.isArray(refs[0])) {
      // tfjs fails here with an assertion whose message is empty.
      throw new RequestError(`${where}: ${key} must be a list of [layer_name, node_index, ` +
        `tensor_index] lists, got the flat form ${JSON.stringify(refs)}`);
    }
    for (const r of refs) {
      const ref = Array.isArray(r) ? r[0] : r;
      if (!names.has(String(ref))) {
        throw new RequestError(`${where}: ${key} names unknown layer '${ref}' ` +
          `(entries must be [layer_name, node_index, tensor_index] inside a list)`);
      }
    }
  }
}

function checkTopology(modelTopology, file) {
  if (modelTopology == null || typeof modelTopology !== 'object') {
    throw new RequestError(`${file}: modelTopology is missing or not an object`);
  }
  const mc = modelTopology.model_config ?? modelTopology;
  if (mc && typeof mc === 'object' && mc.config && typeof mc.config === 'object') {
    checkContainer(mc.config, 'modelTopology');
  }
}

// ---------------------------------------------------------------------------------------
// Loading

/**
 * The real path of weight file `p` of the model folder `dir`, confined to it (the same rule as
 * writer/tfjs_files.py model_file): a plain relative name (no absolute path, '..', '.', empty
 * part, backslash or NUL), resolving (symlinks followed) to a regular file inside the folder.
 */
async function confinedShard(dir, p, modelJsonPath) {
  const shown = JSON.stringify(p);
  if (typeof p !== 'string' || p === '' || p.startsWith('/') || p.includes('\\') || p.includes('\0') ||
      p.split('/').some((part) => part === '' || part === '.' || part === '..')) {
    throw new RequestError(`${modelJsonPath}: the weight file ${shown} is not a plain relative name inside ` +
      'the model folder (absolute paths, ".." and empty parts are refused)');
  }
  let root;
  let real;
  try {
    root = await realpath(dir);
    real = await realpath(path.join(dir, p));
  } catch (e) {
    throw new RequestError(`${modelJsonPath}: the weight file ${shown} cannot be read (${e.code || e.message})`);
  }
  if (real !== root && !real.startsWith(root + path.sep)) {
    throw new RequestError(`${modelJsonPath}: the weight file ${shown} leads outside the model folder (to ${real})`);
  }
  if (!(await stat(real)).isFile()) {
    throw new RequestError(`${modelJsonPath}: the weight file ${shown} is not a regular file`);
  }
  return real;
}

/** IOHandler reading model.json and its shards from the file system. */
function fileHandler(modelJsonPath) {
  const dir = path.dirname(modelJsonPath);
  return {
    load: async () => {
      const text = await readFile(modelJsonPath, 'utf8');
      let json;
      try {
        json = JSON.parse(text);
      } catch (e) {
        throw new RequestError(`${modelJsonPath}: invalid JSON: ${e.message}`);
      }
      if (json == null || typeof json !== 'object' || Array.isArray(json)) {
        throw new RequestError(`${modelJsonPath}: top level is not a JSON object`);
      }
      if (json.modelTopology == null) {
        throw new RequestError(`${modelJsonPath}: no modelTopology (not a LayersModel)`);
      }
      const graph = isGraphModel(json);
      if (!('weightsManifest' in json)) {
        // tfjs itself would load the model with random initializer weights.
        throw new RequestError(`${modelJsonPath}: no weightsManifest; tfjs would silently ` +
          'keep random initializer weights');
      }
      if (!Array.isArray(json.weightsManifest)) {
        throw new RequestError(`${modelJsonPath}: weightsManifest is not a list`);
      }
      if (!graph) checkTopology(json.modelTopology, modelJsonPath);
      // Like tf.io.http: all paths of all groups, in manifest order, form ONE byte stream
      // and all groups' weight specs ONE list.
      const buffers = [];
      const weightSpecs = [];
      json.weightsManifest.forEach((group, g) => {
        if (!group || !Array.isArray(group.paths) || !Array.isArray(group.weights)) {
          throw new RequestError(`${modelJsonPath}: weightsManifest[${g}] needs lists "paths" and "weights"`);
        }
        weightSpecs.push(...group.weights);
      });
      for (const group of json.weightsManifest) {
        for (const p of group.paths) buffers.push(await readFile(await confinedShard(dir, p, modelJsonPath)));
      }
      const all = Buffer.concat(buffers);
      const weightData = all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength);
      const artifacts = { modelTopology: json.modelTopology, weightSpecs, weightData };
      for (const k of ['userDefinedMetadata', 'format', 'generatedBy', 'convertedBy', 'trainingConfig', 'signature',
        'modelInitializer']) {
        if (json[k] !== undefined) artifacts[k] = json[k];
      }
      return artifacts;
    },
  };
}

// A GraphModel (format "graph-model", or a GraphDef topology with a node list) loads with
// tf.loadGraphModel; everything else is a LayersModel.
function isGraphModel(json) {
  return json.format === 'graph-model' || Array.isArray(json.modelTopology?.node);
}

async function loadModel(modelPath) {
  if (typeof modelPath !== 'string' || modelPath === '') {
    throw new RequestError('request needs "model": path of model.json');
  }
  const t0 = performance.now();
  const file = path.resolve(modelPath);
  let json = {};
  try {
    json = JSON.parse(await readFile(file, 'utf8'));
  } catch (e) {
    // fileHandler reports an unreadable or invalid model.json with its own message.
  }
  const model = isGraphModel(json)
    ? await tf.loadGraphModel(fileHandler(file))
    : await tf.loadLayersModel(fileHandler(file), { strict: true });
  return { model, loadMs: performance.now() - t0 };
}

// ---------------------------------------------------------------------------------------
// Tensors on the wire

const ARRAYS = { float32: Float32Array, int32: Int32Array, bool: Uint8Array };

function decodeInput(spec, i) {
  if (!spec || typeof spec !== 'object') throw new RequestError(`inputs[${i}] is not an object`);
  const Ctor = ARRAYS[spec.dtype];
  if (!Ctor || spec.dtype === 'bool') {
    throw new RequestError(`inputs[${i}]: dtype '${spec.dtype}' (expected "float32" or "int32")`);
  }
  if (!Array.isArray(spec.shape)) throw new RequestError(`inputs[${i}]: shape is not a list`);
  const bytes = Buffer.from(String(spec.data ?? ''), 'base64');
  const n = spec.shape.reduce((a, b) => a * b, 1);
  if (bytes.byteLength !== n * Ctor.BYTES_PER_ELEMENT) {
    throw new RequestError(`inputs[${i}]: ${bytes.byteLength} bytes for shape ` +
      `[${spec.shape}] ${spec.dtype} (expected ${n * Ctor.BYTES_PER_ELEMENT})`);
  }
  // Copy into a fresh, aligned ArrayBuffer (Buffer slices of the pool may be unaligned).
  const copy = new Uint8Array(bytes.byteLength);
  copy.set(bytes);
  return tf.tensor(new Ctor(copy.buffer), spec.shape, spec.dtype);
}

async function encodeOutput(t) {
  let data = await t.data();
  // tfjs's cpu Cast from int32 to float32 keeps the Int32Array under the float32 dtype: send what the dtype says.
  const Ctor = ARRAYS[t.dtype];
  if (Ctor && !(data instanceof Ctor)) data = Ctor.from(data);
  return {
    shape: t.shape,
    dtype: t.dtype,
    data: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64'),
  };
}

const asList = (x) => (Array.isArray(x) ? x : [x]);

// ---------------------------------------------------------------------------------------
// Commands

async function predict(req) {
  const repeat = req.repeat == null ? 1 : Number(req.repeat);
  if (!Number.isInteger(repeat) || repeat < 1) throw new RequestError(`repeat must be an integer >= 1`);
  if (!Array.isArray(req.inputs) || req.inputs.length === 0) {
    throw new RequestError('request needs "inputs": a non-empty list');
  }
  await useBackend(req.backend ?? 'cpu');
  const { model, loadMs } = await loadModel(req.model);
  const inputs = [];
  try {
    if (req.inputs.length !== model.inputs.length) {
      throw new RequestError(`model has ${model.inputs.length} input(s) ` +
        `(${model.inputs.map((t) => `[${t.shape}]`).join(', ')}) but ${req.inputs.length} were given`);
    }
    req.inputs.forEach((spec, i) => inputs.push(decodeInput(spec, i)));
    const feed = inputs.length === 1 ? inputs[0] : inputs;
    const predictMs = [];
    let outputs = [];
    for (let r = 0; r < repeat; r++) {
      tf.dispose(outputs);
      const t0 = performance.now();
      outputs = asList(model.predict(feed));
      // Reading the values back is part of the cost a page pays, and syncs async backends.
      await Promise.all(outputs.map((t) => t.data()));
      predictMs.push(performance.now() - t0);
    }
    const encoded = [];
    for (const t of outputs) encoded.push(await encodeOutput(t));
    tf.dispose(outputs);
    return { outputs: encoded, load_ms: loadMs, predict_ms: predictMs, backend: tf.getBackend() };
  } finally {
    tf.dispose(inputs);
    model.dispose();
  }
}

function safe(fn) {
  try {
    return fn();
  } catch (e) {
    return null;
  }
}

async function summary(req) {
  await useBackend(req.backend ?? 'cpu');
  const { model, loadMs } = await loadModel(req.model);
  try {
    const tensorInfo = (t) => ({ name: t.name, shape: t.shape, dtype: t.dtype });
    if (model.layers === undefined) {  // a GraphModel: its signature and metadata
      return {
        summary: {
          class: 'GraphModel',
          inputs: model.inputs.map(tensorInfo),
          outputs: model.outputs.map(tensorInfo),
          weights: Object.entries(model.weights).map(([name, ts]) => ({ name, shape: ts[0].shape, dtype: ts[0].dtype })),
          metadata: model.metadata ?? null,
          userDefinedMetadata: model.metadata ?? null,
        },
        load_ms: loadMs,
        backend: tf.getBackend(),
      };
    }
    return {
      summary: {
        name: model.name,
        class: model.getClassName(),
        layers: model.layers.map((l) => ({
          name: l.name,
          class: l.getClassName(),
          // outputShape throws for layers called more than once (shared layers).
          output_shape: safe(() => l.outputShape),
          params: l.countParams(),
        })),
        inputs: model.inputs.map(tensorInfo),
        outputs: model.outputs.map(tensorInfo),
        weights: model.weights.map((w) => ({ name: w.originalName, shape: w.shape, dtype: w.dtype })),
        params: model.countParams(),
        metadata: model.getUserDefinedMetadata() ?? null,
        // Same object under tfjs's own field name (model.json's key), for callers using it.
        userDefinedMetadata: model.getUserDefinedMetadata() ?? null,
      },
      load_ms: loadMs,
      backend: tf.getBackend(),
    };
  } finally {
    model.dispose();
  }
}

async function handle(req) {
  switch (req.cmd) {
    case 'predict': return predict(req);
    case 'summary': return summary(req);
    case 'version': return { tfjs: tf.version.tfjs, node: process.version, source: tfjs.source };
    // Live tensors/variables, to check that requests leave nothing behind.
    case 'memory': {
      const m = tf.memory();
      return { num_tensors: m.numTensors, num_bytes: m.numBytes, backend: tf.getBackend() };
    }
    default: throw new RequestError(`unknown cmd '${req.cmd}' (expected predict, summary, version, memory)`);
  }
}

function errorText(e) {
  if (e instanceof Error) {
    // Some tfjs assertions carry an EMPTY message (e.g. flat input_layers); name the place.
    if (e.message) return e.message;
    const frame = (e.stack || '').split('\n').slice(1, 3).map((s) => s.trim()).join(' ');
    return `${e.name} with an empty message ${frame}`.trim();
  }
  return String(e);
}

function respond(obj) {
  process.stdout.write(JSON.stringify(obj) + '\n');
}

async function serveLine(line) {
  if (line.trim() === '') return;
  let req;
  try {
    req = JSON.parse(line);
  } catch (e) {
    respond({ id: null, ok: false, error: `invalid request JSON: ${e.message}` });
    return;
  }
  const id = req && typeof req === 'object' ? req.id ?? null : null;
  try {
    if (!req || typeof req !== 'object') throw new RequestError('request is not a JSON object');
    const result = await handle(req);
    respond({ id, ok: true, ...result });
  } catch (e) {
    respond({ id, ok: false, error: errorText(e) });
  } finally {
    // A failed load leaves the variables of half-built layers behind; nothing is shared
    // between requests, so dropping every variable is safe.
    safe(() => tf.disposeVariables());
  }
}

process.on('uncaughtException', (e) => log('tfjs_runner: uncaught:', e && e.stack ? e.stack : e));
process.on('unhandledRejection', (e) => log('tfjs_runner: unhandled rejection:', e && e.stack ? e.stack : e));

// Requests are served strictly one at a time, in arrival order, after the cpu backend is up.
let chain = useBackend('cpu')
  .then(() => log(`tfjs_runner: ready (tfjs ${tf.version.tfjs} from ${tfjs.source}, node ${process.version})`))
  .catch((e) => log('tfjs_runner: cpu backend failed:', errorText(e)));
const rl = readline.createInterface({ input: process.stdin, crlfDelay: Infinity });
rl.on('line', (line) => {
  chain = chain.then(() => serveLine(line));
});
rl.on('close', () => {
  chain.then(() => process.exit(0));
});
