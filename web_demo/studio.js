// The conversion studio: pick -> inspect -> convert (live, over Server-Sent Events) -> verify / test.
// Talks only to the local `python -m writer studio` server; model text is shown with textContent only.
'use strict';

(function () {
  const {el} = F2T;
  const $ = (id) => document.getElementById(id);
  const STAGES = ['read', 'fix', 'graph', 'optimize', 'write', 'verify'];
  const ITEMSIZE = {'': 4, float16: 2, uint16: 2, uint8: 1};
  const MIB = 1024 * 1024;

  // What automation (and curious users, in the console) can read back.
  const studio = window.studio = {events: [], job: null, inspected: null, report: null, verify: null};
  let config = {optimize: null, presets: {}, max_upload_bytes: 0};
  let checkpoint = null;   // the path (or upload:ID/NAME handle) being worked on
  let source = null;       // the running EventSource

  class StudioError extends Error {
    constructor(e) {
      super(e.message);
      Object.assign(this, e);
    }
  }

  function setState(state) {
    document.body.dataset.state = state;
  }

  // ---------- errors ----------

  // The one error box moves next to the action that failed (`where`: an element of that card),
  // takes the focus (which scrolls it into view) and, being role="alert", is announced. The hint
  // shown is the server's page_hint (the CLI flags named by the page's controls, see
  // writer/studio/page_hints.py); the controls it names get a "Go to" button, and an output folder
  // that is not empty gets "Replace it and convert again".
  function showError(err, where) {
    const box = $('error');
    (where || document.querySelector('#pick-card .pick')).after(box);
    if (err && err.code) {
      const actions = (err.controls || []).filter((id) => $(id) && !$(id).closest('[hidden]')).map((id) => el('button', {type: 'button', class: 'link',
        text: `Go to “${controlLabel(id)}”`, onclick: () => goTo(id)}));
      if (err.code === 'OUTPUT_NOT_EMPTY' && studio.lastForm) {
        actions.unshift(el('button', {type: 'button', id: 'replace-again', text: 'Replace it and convert again',
          onclick: () => { $('force').checked = true; $('convert-form').requestSubmit(); }}));
      }
      box.replaceChildren(...[
        el('strong', {text: `error[${err.code}]: ${err.message}`}),
        err.hint ? el('span', {class: 'detail', text: `hint: ${err.page_hint || err.hint}`}) : null,
        actions.length ? el('span', {class: 'detail actions'}, ...actions) : null,
        err.doc ? el('a', {class: 'detail', href: err.doc, target: '_blank', rel: 'noopener', text: `Troubleshooting: ${err.code}`}) : null,
      ].filter(Boolean));
      box.dataset.code = err.code;
      box.hidden = false;
    } else {
      F2T.showError(box, err);
      box.dataset.code = '';
    }
    box.focus({preventScroll: true});
    box.scrollIntoView({block: 'center'});
  }

  function clearError() {
    $('error').hidden = true;
    $('error').dataset.code = '';
  }

  function controlLabel(id) {
    const label = document.querySelector(`label[for="${id}"]`) || $(id).closest('label');
    return label ? label.textContent.trim().replace(/\s*\(.*$/, '') : id;
  }

  function goTo(id) {
    const details = $(id).closest('details');
    if (details) details.open = true;
    $(id).focus();
  }

  // Every POST carries the per-launch token the server hands out in /api/config (CSRF defence).
  const tokenHeaders = () => (config.token ? {[config.token_header]: config.token} : {});

  async function api(path, body) {
    const init = body === undefined ? {} : {method: 'POST', headers: {'Content-Type': 'application/json', ...tokenHeaders()}, body: JSON.stringify(body)};
    const response = await fetch(path, {cache: 'no-store', ...init});
    const data = await response.json().catch(() => ({error: {code: 'INTERNAL', message: `HTTP ${response.status} from ${path}`, hint: ''}}));
    if (data && data.error) throw new StudioError(data.error);
    return data;
  }

  // ---------- pick ----------

  function crumbs(dir) {
    const parts = dir === '.' ? [] : dir.split('/');
    const items = [['.', config.root || 'ROOT'], ...parts.map((p, i) => [parts.slice(0, i + 1).join('/'), p])];
    $('crumbs').replaceChildren(...items.map(([path, name], i) => el('li', {},
      i === items.length - 1 ? current(el('span', {text: name})) : el('button', {type: 'button', class: 'link', text: name, onclick: () => browse(path)}))));
  }

  function current(node) {
    node.setAttribute('aria-current', 'location');
    return node;
  }

  const KIND_LABEL = {folder: 'folder', orbax: 'Orbax checkpoint', checkpoint: 'checkpoint file', module: 'model code'};

  let currentDir = '.';

  async function browse(dir) {
    try {
      const data = await api(`/api/list?dir=${encodeURIComponent(dir)}`);
      currentDir = data.dir;
      crumbs(data.dir);
      $('files').replaceChildren(...data.entries.map((entry) => {
        const li = el('li', {class: `file ${entry.kind}`});
        const main = el('button', {type: 'button', class: 'entry', 'data-path': entry.path},
          el('span', {class: 'name', text: entry.name}),
          el('span', {class: 'kind', text: KIND_LABEL[entry.kind] + (entry.bytes ? ` · ${F2T.formatBytes(entry.bytes)}` : '')}));
        if (entry.kind === 'folder') main.onclick = () => browse(entry.path);
        else if (entry.kind === 'module') main.onclick = () => pickModule(entry.path);
        else main.onclick = () => { $('ckpt-path').value = entry.path; inspect(entry.path); };
        li.append(main);
        if (entry.kind === 'orbax') li.append(el('button', {type: 'button', class: 'link', text: 'open folder', onclick: () => browse(entry.path)}));
        return li;
      }));
      if (!data.entries.length) $('files').append(el('li', {class: 'hint', text: 'No checkpoints, model files or folders here.'}));
    } catch (err) {
      showError(err);
    }
  }

  // A .py file: its classes (read by the server with ast, not run) as buttons and completions;
  // a file with one class fills it in.
  async function pickModule(file) {
    $('model-details').open = true;
    $('module').value = `${file}:`;
    $('module').focus();
    try {
      const {classes} = await api(`/api/classes?file=${encodeURIComponent(file)}`);
      $('module-options').replaceChildren(...classes.map((c) => el('option', {value: `${file}:${c}`})));
      if (classes.length === 1) $('module').value = `${file}:${classes[0]}`;
      $('module-classes').replaceChildren(...(classes.length
        ? [`Classes in ${file}: `, ...classes.flatMap((c, i) => [i ? ', ' : '', el('button', {type: 'button', class: 'link', text: c,
          onclick: () => { $('module').value = `${file}:${c}`; $('module').focus(); }})])]
        : [`${file} defines no class.`]));
    } catch (err) {
      showError(err);
    }
  }

  $('path-form').addEventListener('submit', (event) => {
    event.preventDefault();
    const path = $('ckpt-path').value.trim();
    if (path) inspect(path);
  });

  async function upload(file) {
    clearError();
    if (config.max_upload_bytes && file.size > config.max_upload_bytes) {
      return showError({code: 'UPLOAD_TOO_LARGE', message: `${file.name} is ${file.size.toLocaleString('en-US')} bytes; the limit is ${config.max_upload_bytes.toLocaleString('en-US')}`,
        hint: 'restart the studio with a larger --max-upload-mb, or put the file under ROOT', doc: '/troubleshooting#upload_too_large'});
    }
    $('upload-status').textContent = `Uploading ${file.name}…`;
    try {
      const response = await fetch(`/api/upload?name=${encodeURIComponent(file.name)}`, {method: 'POST', headers: tokenHeaders(), body: file});
      const data = await response.json();
      if (data.error) throw new StudioError(data.error);
      $('upload-status').textContent = `Uploaded ${file.name} (${F2T.formatBytes(file.size)}).`;
      $('ckpt-path').value = data.checkpoint;
      inspect(data.checkpoint);
    } catch (err) {
      $('upload-status').textContent = `Could not upload ${file.name}.`;
      showError(err);
    }
  }

  const drop = $('drop');
  drop.addEventListener('dragover', (event) => { event.preventDefault(); drop.classList.add('over'); });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    const file = event.dataTransfer.files[0];
    if (file) upload(file);
  });
  $('upload-input').addEventListener('change', (event) => {
    const file = event.target.files[0];
    event.target.value = '';
    if (file) upload(file);
  });

  function modelFields() {
    return {module: $('module').value.trim(), input_shape: $('input-shape').value.trim(), input_dtype: $('input-dtype').value,
      activation: $('activation').value, pool: $('pool').value, step: $('step').value.trim()};
  }

  // ---------- inspect ----------

  async function inspect(path) {
    clearError();
    setState('inspecting');
    checkpoint = path;
    $('inspect-card').hidden = true;
    $('convert-card').hidden = true;
    $('result-card').hidden = true;
    try {
      const report = await api('/api/inspect', {checkpoint: path, ...modelFields()});
      studio.inspected = report;
      showInspection(report);
      $('out').value = report.suggested_out;  // <name>_tfjs, or _tfjs_2... when that exists
      $('convert-card').hidden = false;
      updateSize();
      setState('inspected');
    } catch (err) {
      showError(err);
      setState('error');
    }
  }

  function shapeText(shape) {
    return shape == null ? '?' : `(${shape.join(', ')})`;
  }

  function table(node, head, rows) {
    node.replaceChildren(
      el('thead', {}, el('tr', {}, ...head.map(([text, cls]) => el('th', {class: cls || '', text, scope: 'col'})))),
      el('tbody', {}, ...rows.map((row) => el('tr', {}, ...row.map(([text, cls]) => el('td', {class: cls || '', text}))))));
  }

  const count = (n) => n.toLocaleString('en-US');

  function showInspection(r) {
    const g = r.graph;
    const rows = [
      ['Checkpoint', r.checkpoint], ['Format', `${r.format}${r.step != null ? `, step ${r.step}` : ''}`],
      ['Holds', `${count(r.totals.tensors)} tensors, ${count(r.totals.params)} parameters, ${F2T.formatBytes(r.totals.bytes)}`],
      ['Collections', r.collections.map((c) => `${c.name} (${c.status})`).join(', ') || '—'],
    ];
    if (g) rows.push(['Model', `${g.model_class}, ${g.layers.length} layers, ${g.topology} topology, inputs ${g.inputs.map((i) => `${i.name} ${shapeText(i.shape)} ${i.dtype}`).join('; ')}`]);
    $('summary').replaceChildren(...rows.flatMap(([k, v]) => [el('dt', {text: k}), el('dd', {text: v})]));
    const notes = r.notices.map((n) => el('p', {class: `notice ${n.kind}`, text: `${n.kind}[${n.code}]: ${n.page_message || n.message}`}));
    if (r.graph_error) {
      const e = r.graph_error;
      notes.unshift(el('div', {class: 'alert inline-alert'}, el('strong', {text: `error[${e.code}]: ${e.message}`}),
        el('span', {class: 'detail', text: `hint: ${e.page_hint || e.hint}`}),
        el('a', {class: 'detail', href: `/troubleshooting#${e.code.toLowerCase()}`, target: '_blank', rel: 'noopener', text: `Troubleshooting: ${e.code}`})));
    }
    $('inspect-notices').replaceChildren(...notes);
    table($('layers'), [['#', 'num'], ['Layer'], ['Class'], ['Output shape'], ['Parameters', 'num'], ['Bytes (float32)', 'num']],
      g ? g.layers.map((l, i) => [[String(i), 'num'], [l.name], [l.class_name], [shapeText(l.output_shape)], [count(l.params), 'num'], [F2T.formatBytes(l.params * 4), 'num']]) : []);
    $('tree').replaceChildren(treeNode(r.tree, true));
    $('inspect-card').hidden = false;
  }

  // A subtree as nested <details> (keyboard-operable without any script).
  function treeNode(node, open) {
    if (node.kind === 'scalar') return el('div', {class: 'leaf mono', text: `${node.name} = ${JSON.stringify(node.value)} (not converted)`});
    const label = `${node.name || '/'}  ${node.shape ? shapeText(node.shape) + ' ' + node.dtype : `${count(node.tensors)} tensors`} · ${count(node.params)} params · ${F2T.formatBytes(node.bytes)}${node.status && node.status !== 'converted' ? ` · ${node.status}` : ''}`;
    if (!node.children || !node.children.length) return el('div', {class: 'leaf mono', text: label});
    const details = el('details', {open: Boolean(open)}, el('summary', {class: 'mono', text: label}));
    details.append(...node.children.map((c) => treeNode(c, false)));
    return details;
  }

  // ---------- options and size ----------

  function shardBytes() {
    return Math.max(1, Math.round(Number($('shard-mib').value) * MIB)) || 4 * MIB;
  }

  function updateSize() {
    const g = studio.inspected && studio.inspected.graph;
    if (!g) { $('size').textContent = ''; return; }
    const before = g.param_count * 4;
    const after = g.param_count * ITEMSIZE[$('quantize').value];
    const shards = Math.max(1, Math.ceil(after / shardBytes()));
    $('size').textContent = `Download size: ${F2T.formatBytes(before)} as float32 → ${F2T.formatBytes(after)}${$('quantize').value ? ` as ${$('quantize').value}` : ''} in ${shards} shard${shards === 1 ? '' : 's'} (plus model.json).`;
  }

  $('preset').addEventListener('change', () => {
    const preset = config.presets[$('preset').value];
    if (preset) {
      $('quantize').value = preset.quantize || '';
      $('shard-mib').value = String(preset.weight_shard_size_bytes / MIB);
      if ('optimize' in preset && config.optimize !== null) $('optimize').checked = preset.optimize;
    }
    updateSize();
  });
  for (const id of ['quantize', 'shard-mib', 'optimize']) {
    $(id).addEventListener('input', () => { $('preset').value = ''; updateSize(); });
  }

  function metadata() {
    const text = $('metadata').value.trim();
    if (!text) return null;
    try {
      return JSON.parse(text);
    } catch (err) {
      throw new StudioError({code: 'BAD_METADATA', message: `the metadata is not valid JSON (${err.message})`, hint: 'write one JSON object, e.g. {"labels": ["0", "1"]}', controls: ['metadata'], doc: '/troubleshooting#bad_metadata'});
    }
  }

  // ---------- convert ----------

  function resetLive(text) {
    studio.events = [];
    $('stages').replaceChildren(...STAGES.map((s) => el('li', {'data-stage': s, 'data-state': 'pending', text: s})));
    $('bar').value = 0;
    $('progress-text').textContent = text;
    $('notices').replaceChildren();
  }

  function markStage(stage) {
    let reached = false;
    for (const li of $('stages').children) {
      if (li.dataset.stage === stage) { li.dataset.state = 'active'; reached = true; li.setAttribute('aria-current', 'step'); }
      else { li.removeAttribute('aria-current'); li.dataset.state = reached ? 'pending' : 'done'; }
    }
  }

  function finishStages(state) {
    for (const li of $('stages').children) {
      if (li.dataset.state === 'active') { li.dataset.state = state; li.removeAttribute('aria-current'); }
    }
  }

  let writeStarted = 0;

  function onEvent(ev) {
    studio.events.push(ev);
    if (ev.type === 'stage') {
      markStage(ev.stage);
      if (ev.stage === 'write') writeStarted = ev.seconds;
      $('progress-text').textContent = `${ev.stage}…`;
    } else if (ev.type === 'tensor') {
      $('bar').max = ev.total_bytes || ev.count;
      $('bar').value = ev.total_bytes ? ev.bytes : ev.index;
      const secs = Math.max(1e-3, ev.seconds - writeStarted);
      $('progress-text').textContent = `${ev.index}/${ev.count} tensors · ${F2T.formatBytes(ev.bytes)} of ${F2T.formatBytes(ev.total_bytes)} · ${(ev.bytes / MIB / secs).toFixed(1)} MiB/s · ${ev.name}`;
    } else if (ev.type === 'notice') {
      $('notices').append(el('li', {class: `notice ${ev.kind}`, text: `${ev.kind}[${ev.code}]: ${ev.page_message || ev.message}`}));
    } else if (ev.type === 'done') {
      finishStages('done');
      $('bar').value = $('bar').max;
      $('progress-text').textContent = `Done in ${ev.seconds.toFixed(2)} s: ${count(ev.report.param_count)} parameters, ${F2T.formatBytes(ev.report.bytes_written)}.`;
      showResult(ev);
      end('converted');
      afterConversion();
    } else if (ev.type === 'error') {
      finishStages('failed');
      $('progress-text').textContent = `Failed (error[${ev.code}], below); the output folder was left as it was.`;
      showError(ev, $('convert-buttons'));
      end('error');
    } else if (ev.type === 'cancelled') {
      finishStages('failed');
      $('progress-text').textContent = 'Cancelled; nothing was written.';
      end('cancelled');
    }
  }

  // The new folder shows in the list, and the next conversion of this checkpoint gets a new name.
  async function afterConversion() {
    const done = studio.job.out;
    await browse(currentDir);
    try {
      const {suggested_out: next} = await api(`/api/suggest?checkpoint=${encodeURIComponent(checkpoint)}`);
      if ($('out').value.trim() === done) $('out').value = next;
    } catch (err) {
      showError(err, $('convert-buttons'));
    }
  }

  function end(state) {
    if (source) source.close();
    source = null;
    $('convert').disabled = false;
    $('cancel').disabled = true;
    setState(state);
  }

  $('convert-form').addEventListener('submit', async (event) => {
    event.preventDefault();
    clearError();
    $('result-card').hidden = true;
    resetLive('Starting…');
    $('convert').disabled = true;
    setState('converting');
    try {
      const form = studio.lastForm = {
        checkpoint, out: $('out').value.trim(), ...modelFields(), quantize: $('quantize').value,
        shard_bytes: shardBytes(), metadata: metadata(), force: $('force').checked, format: $('format').value,
        allow_nonfinite: $('allow-nonfinite').checked,
      };
      if (config.optimize !== null) form.optimize = $('optimize').checked;
      const {job, out} = await api('/api/convert', form);
      studio.job = {id: job, out};
      $('cancel').disabled = false;
      source = new EventSource(`/api/jobs/${job}/events`);
      source.onmessage = (message) => onEvent(JSON.parse(message.data));
    } catch (err) {
      showError(err, $('convert-buttons'));
      $('progress-text').textContent = 'Not started.';
      end('error');
    }
  });

  $('cancel').addEventListener('click', async () => {
    if (!studio.job) return;
    $('cancel').disabled = true;
    $('progress-text').textContent = 'Cancelling…';
    try {
      await api(`/api/jobs/${studio.job.id}/cancel`, {});
    } catch (err) {
      showError(err, $('convert-buttons'));
    }
  });

  // ---------- result: download, verify, browser test ----------

  function showResult(ev) {
    const r = studio.report = ev.report;
    const g = studio.inspected && studio.inspected.graph;
    const before = g ? g.param_count * 4 : null;
    $('result-summary').replaceChildren(...[
      ['Folder', studio.job.out],
      ['Files', ev.files.join(', ')],
      ['Download size', `${F2T.formatBytes(r.bytes_written)}${before ? ` (float32 would be ${F2T.formatBytes(before)})` : ''}`],
      ['Weights', r.quantization ? `quantized to ${r.quantization}` : 'float32'],
    ].flatMap(([k, v]) => [el('dt', {text: k}), el('dd', {text: v})]));
    $('download').href = `/api/jobs/${studio.job.id}/download.zip`;
    $('download').setAttribute('download', `${studio.job.out.split('/').pop()}.zip`);
    const name = studio.job.out.split('/').pop();
    const loader = r.topology === 'graph-model' ? 'loadGraphModel' : 'loadLayersModel';
    $('snippet').textContent = `import * as tf from '@tensorflow/tfjs';\n\nconst model = await tf.${loader}('/${name}/model.json');\nconst y = model.predict(tf.zeros([1, ${(g ? g.inputs[0].shape : []).join(', ')}]));\ny.print();`;
    $('verdict').textContent = '';
    $('metrics').replaceChildren();
    $('timings').replaceChildren();
    $('browser-layers').replaceChildren();
    $('browser-status').textContent = '';
    $('result-card').hidden = false;
  }

  $('copy').addEventListener('click', async () => {
    try {
      await navigator.clipboard.writeText($('snippet').textContent);
      $('copy').textContent = 'Copied';
    } catch (err) {
      const range = document.createRange();  // no clipboard permission: select it for Ctrl+C
      range.selectNodeContents($('snippet'));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      $('copy').textContent = 'Selected: press Ctrl+C';
    }
  });

  const num = (v) => (v == null ? '—' : Math.abs(v) < 1e-3 && v !== 0 ? v.toExponential(2) : v.toPrecision(4));

  $('verify').addEventListener('click', async () => {
    clearError();
    setState('verifying');
    markStage('verify');
    $('verify').disabled = true;
    $('verdict').textContent = 'Verifying…';
    try {
      const v = studio.verify = await api(`/api/jobs/${studio.job.id}/verify`, {});
      finishStages('done');
      $('verdict').replaceChildren(el('strong', {class: v.passed ? 'pass' : 'fail', text: v.passed ? 'PASS' : 'FAIL'}),
        v.passed ? ` in ${v.seconds.toFixed(1)} s` : `: ${v.failures.join('; ')}`);
      table($('metrics'), [['Metric'], ['Value', 'num'], ['']], [
        [['max abs error'], [num(v.max_abs_error), 'num'], [`tolerance ${num(v.tolerance * v.scale)}`]],
        [['mean squared error'], [num(v.mse), 'num'], ['']],
        [['top-1 agreement'], [v.top1_agreement == null ? '—' : `${(v.top1_agreement * 100).toFixed(2)} %`, 'num'], ['TF.js arg-max = JAX arg-max']],
        [['predict latency'], [`${v.predict_ms.toFixed(2)} ms`, 'num'], [`median of ${v.predict_runs} batch-1 runs, TF.js ${v.backend} in Node`]],
        [['TF.js load'], [`${v.load_ms.toFixed(1)} ms`, 'num'], ['']],
        [['samples'], [count(v.inputs.samples), 'num'], [v.inputs.source === 'random' ? `random inputs, seed ${v.inputs.seed}` : v.inputs.source]],
      ]);
      setState(v.passed ? 'verified' : 'verify-failed');
    } catch (err) {
      finishStages('failed');
      $('verdict').textContent = 'Verification could not run.';
      showError(err, $('verify'));
      setState('error');
    } finally {
      $('verify').disabled = false;
    }
  });

  // Tabs: arrow keys move between them (WAI-ARIA tabs pattern).
  const tabs = Array.from(document.querySelectorAll('[role="tab"]'));
  function selectTab(tab) {
    for (const t of tabs) {
      const on = t === tab;
      t.setAttribute('aria-selected', String(on));
      t.tabIndex = on ? 0 : -1;
      $(t.getAttribute('aria-controls')).hidden = !on;
    }
    tab.focus();
  }
  for (const tab of tabs) {
    tab.addEventListener('click', () => selectTab(tab));
    tab.addEventListener('keydown', (event) => {
      const i = tabs.indexOf(tab);
      if (event.key === 'ArrowRight') selectTab(tabs[(i + 1) % tabs.length]);
      if (event.key === 'ArrowLeft') selectTab(tabs[(i + tabs.length - 1) % tabs.length]);
    });
  }

  // For studio-test.js (the "Test in this browser" tab), loaded after this file.
  studio.ui = {showError, clearError, setState, table, count};

  // ---------- start ----------

  F2T.catchAll($('error'), () => setState('error'));
  api('/api/config').then((c) => {
    config = c;
    $('root-name').textContent = `studio folder: ${c.root}`;
    $('activation').replaceChildren(...c.activations.map((a) => el('option', {value: a, text: a, selected: a === c.activation})));
    $('pool').replaceChildren(...c.pools.map((p) => el('option', {value: p, text: p, selected: p === c.pool})));
    if (c.optimize === null) {
      $('optimize').disabled = true;
      $('optimize-note').hidden = false;
    } else {
      $('optimize').checked = c.optimize;  // the engine's default, as on the command line
    }
    resetLive('Not started.');
    return browse('.');
  }).catch(showError);
})();
