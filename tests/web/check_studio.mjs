// Drive the conversion studio (web_demo/studio.html, served by `python -m writer studio`) in real
// Chromium and report what happened as JSON.
//   node tests/web/check_studio.mjs CONFIG.json RESULTS.json
// tests/test_studio.py starts the server, writes the config and judges the results; this script
// only acts and observes.
import fs from 'node:fs';
import path from 'node:path';
import {launch} from './browser.mjs';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const out = {screenshots: {}, seconds: {}};
const started = Date.now();
const browser = await launch();
const page = await browser.context.newPage();
const problems = [];
page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
page.on('console', (m) => {
  // A refused request (403/409) is logged by Chromium as a failed resource load; that is expected.
  if (m.type() === 'error' && !m.text().startsWith('Failed to load resource')) problems.push(`console: ${m.text()}`);
});
await page.addInitScript(() => {
  document.addEventListener('securitypolicyviolation', (e) => {
    (window.cspViolations ||= []).push(`${e.violatedDirective} ${e.blockedURI}`);
  });
});

const state = () => page.evaluate(() => document.body.dataset.state);
const waitState = (states, timeout = 120000) => page.waitForFunction(
  (s) => s.includes(document.body.dataset.state), states, {timeout});
// The whole page, or one card of it (smaller pictures for the docs).
const shot = async (name, selector) => {
  const file = path.join(cfg.artifacts, `studio-${name}.png`);
  if (selector) await page.locator(selector).screenshot({path: file});
  else await page.screenshot({path: file});
  out.screenshots[name] = file;
};
// The error box: what it says, which card it sits in, whether it has the focus and is on screen.
const errorBox = () => page.evaluate(() => {
  const box = document.getElementById('error');
  const r = box.getBoundingClientRect();
  const card = box.closest('.card');
  return {shown: !box.hidden, code: box.dataset.code, text: box.textContent,
    link: box.querySelector('a') ? box.querySelector('a').getAttribute('href') : null,
    card: card ? card.id || card.getAttribute('aria-labelledby') : null, after: box.previousElementSibling ? box.previousElementSibling.id : null,
    focused: document.activeElement === box, role: box.getAttribute('role'),
    onScreen: !box.hidden && r.top >= 0 && r.bottom <= window.innerHeight,
    buttons: Array.from(box.querySelectorAll('button')).map((b) => b.textContent)};
});
const tableRows = (id) => page.evaluate((i) => Array.from(document.querySelectorAll(`#${i} tbody tr`))
  .map((tr) => Array.from(tr.cells).map((td) => td.textContent)), id);

// The lowest WCAG contrast ratio of any visible, enabled text on the page, with where it is.
function lowestContrast() {
  const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = (node) => {
    for (let n = node; n; n = n.parentElement) {
      const c = rgb(getComputedStyle(n).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.5)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  let worst = {ratio: 99, where: ''};
  for (const node of document.querySelectorAll('body *')) {
    const text = Array.from(node.childNodes).some((c) => c.nodeType === 3 && c.textContent.trim());
    if (!text || !node.getClientRects().length || node.closest('[hidden], :disabled, .file-button input')) continue;
    const style = getComputedStyle(node);
    if (style.visibility === 'hidden' || Number(style.opacity) < 0.9) continue;
    const [a, b] = [lum(rgb(style.color).slice(0, 3)), lum(background(node))];
    const ratio = (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
    if (ratio < worst.ratio) worst = {ratio, where: `${node.tagName.toLowerCase()}#${node.id}.${node.className}: ${node.textContent.trim().slice(0, 40)}`};
  }
  return worst;
}

async function inspectPath(p) {
  await page.fill('#ckpt-path', p);
  await page.press('#ckpt-path', 'Enter'); // keyboard: Enter submits
  await waitState(['inspected', 'error']);
  return state();
}

// Convert with the current form; `onTensor` runs once the first tensor event arrived.
async function convert(out, onTensor, {submitted = false} = {}) {
  if (!submitted) {
    await page.fill('#out', out);
    await page.focus('#out');
    await page.keyboard.press('Enter');
  }
  if (onTensor) {
    await page.waitForFunction(() => window.studio.events.some((e) => e.type === 'tensor'), null, {timeout: 120000});
    await onTensor();
  }
  await waitState(['converted', 'error', 'cancelled']);
  return page.evaluate(() => ({state: document.body.dataset.state, events: window.studio.events,
    progress: document.getElementById('progress-text').textContent,
    stages: Array.from(document.querySelectorAll('#stages li')).map((li) => [li.dataset.stage, li.dataset.state]),
    notices: Array.from(document.querySelectorAll('#notices li')).map((li) => li.textContent)}));
}

try {
  await page.goto(cfg.url);
  await page.waitForSelector('#files button.entry');
  out.listing = await page.$$eval('#files button.entry', (bs) => bs.map((b) => b.dataset.path));
  await shot('pick');

  // ---------- paths outside ROOT ----------
  out.outside = {};
  for (const p of cfg.outside) {
    await inspectPath(p);
    out.outside[p] = await errorBox();
  }
  out.outsideApi = await page.evaluate(async (dirs) => Promise.all(dirs.map(async (d) => {
    const r = await fetch(`/api/list?dir=${encodeURIComponent(d)}`);
    return {dir: d, status: r.status, body: await r.json()};
  })), cfg.outside);

  // ---------- inspect + convert MNIST ----------
  let t0 = Date.now();
  await page.click(`#files button.entry[data-path="${path.posix.dirname(cfg.mnist)}"]`); // into the folder
  await page.click(`#files button.entry[data-path="${cfg.mnist}"]`);
  await waitState(['inspected', 'error']);
  out.inspect = {state: await state(), error: await errorBox(), layers: await tableRows('layers'),
    summary: await page.textContent('#summary'), size: await page.textContent('#size'),
    treeLeaves: await page.$$eval('#tree .leaf', (ls) => ls.map((l) => l.textContent)),
    suggestedOut: await page.inputValue('#out')};
  await page.click('#inspect-card > details > summary'); // open the parameter tree
  await page.click('#tree > details > summary'); // collapsible: the root closes
  out.inspect.treeRootOpenAfterClick = await page.$eval('#tree > details', (d) => d.open);
  await page.click('#tree > details > summary');
  await page.click('#tree > details > details > summary'); // and "params" opens
  await shot('inspect', '#inspect-card');
  out.seconds.inspect = (Date.now() - t0) / 1000;

  // The presets fill the options; "custom" with float32 weights for an exact comparison.
  await page.selectOption('#preset', 'mobile');
  out.preset = {mobile: await page.evaluate(() => ({quantize: document.getElementById('quantize').value,
    shardMiB: document.getElementById('shard-mib').value, optimize: document.getElementById('optimize').checked,
    size: document.getElementById('size').textContent}))};
  await page.selectOption('#preset', 'web');
  out.preset.web = await page.evaluate(() => ({quantize: document.getElementById('quantize').value,
    shardMiB: document.getElementById('shard-mib').value, size: document.getElementById('size').textContent}));
  await page.selectOption('#preset', '');
  await page.selectOption('#quantize', '');
  await page.fill('#metadata', JSON.stringify({labels: ['zero', 'one'], note: cfg.payload}));
  t0 = Date.now();
  out.convert = await convert(cfg.mnistOut);
  out.convert.job = await page.evaluate(() => window.studio.job);
  out.convert.result = await page.textContent('#result-summary');
  out.convert.snippet = await page.textContent('#snippet');
  out.convert.download = await page.getAttribute('#download', 'href');
  // The list shows the new folder without a reload; the output field moves on to a free name.
  out.convert.listed = await page.waitForSelector(`#files button.entry[data-path="${cfg.mnistOut}"]`, {timeout: 10000})
    .then(() => true, () => false);
  await page.waitForFunction((o) => document.getElementById('out').value !== o, cfg.mnistOut, {timeout: 10000}).catch(() => {});
  out.convert.nextOut = await page.inputValue('#out');
  out.seconds.convert = (Date.now() - t0) / 1000;
  await shot('convert', '#convert-card');

  // ---------- verify ----------
  t0 = Date.now();
  await page.click('#verify');
  await waitState(['verified', 'verify-failed', 'error'], 300000);
  out.verify = {state: await state(), verdict: await page.textContent('#verdict'), metrics: await tableRows('metrics'),
    report: await page.evaluate(() => window.studio.verify), error: await errorBox()};
  out.seconds.verify = (Date.now() - t0) / 1000;
  await shot('verify', '#result-card');

  // ---------- the model in this browser: JSON, then an image ----------
  t0 = Date.now();
  await page.focus('#tab-verify');
  await page.keyboard.press('ArrowRight'); // keyboard: arrow keys switch tabs
  out.browserTabSelected = await page.getAttribute('#tab-browser', 'aria-selected');
  await page.check('input[name="browser-mode"][value="json"]');
  await page.fill('#browser-input', JSON.stringify(cfg.digit));
  await page.click('#browser-run');
  await waitState(['tested', 'error'], 180000);
  out.browser = {state: await state(), status: await page.textContent('#browser-status'),
    timings: await tableRows('timings'), layers: await tableRows('browser-layers'),
    results: JSON.parse((await page.getAttribute('#timings', 'data-result')) || '{}'), error: await errorBox()};
  out.seconds.browser = (Date.now() - t0) / 1000;
  await shot('browser', '#result-card');
  await page.check('input[name="browser-mode"][value="image"]');
  await page.setInputFiles('#browser-image', cfg.image);
  await page.check('#browser-image-invert');  // the file is a dark digit on white
  await page.click('#browser-run');
  await waitState(['tested', 'error'], 180000);
  out.browserImage = {state: await state(), status: await page.textContent('#browser-image-status'),
    results: JSON.parse((await page.getAttribute('#timings', 'data-result')) || '{}'), error: await errorBox(),
    preview: await page.$eval('#browser-image-preview', (c) => ({hidden: c.hidden, width: c.width, height: c.height}))};
  await shot('image', '#panel-browser');

  // A second conversion into the same folder: refused (not empty), nothing changed.
  // The error sits under the Convert button, has the focus, is on screen, speaks of the page's
  // checkbox, and offers to replace.
  await page.evaluate(() => window.scrollTo(0, 0));
  const again = await convert(cfg.mnistOut);
  out.convertAgain = {state: again.state, error: await errorBox(), progress: again.progress};
  await shot('error-inline', '#convert-card');
  await page.click('#error button.link');  // "Go to" the checkbox the hint names
  out.convertAgain.goTo = await page.evaluate(() => document.activeElement.id);
  await page.click('#replace-again');
  await waitState(['converted', 'error', 'cancelled']);
  out.replaced = {state: await state(), force: await page.isChecked('#force'), error: await errorBox()};
  await page.uncheck('#force');

  // ---------- bad checkpoints ----------
  await inspectPath(cfg.broken);
  out.broken = await errorBox();
  await shot('error');
  await inspectPath(cfg.nonfinite);
  out.nonfiniteInspect = await state();
  const bad = await convert(cfg.nonfiniteOut);
  out.nonfinite = {state: bad.state, stages: bad.stages, error: await errorBox(), progress: bad.progress};

  // ---------- model code: the classes of a .py file, an empty class name ----------
  await page.click(`#files button.entry[data-path="${cfg.moduleFile}"]`).catch(async () => {
    await page.click('#crumbs button');  // back to ROOT first, then into the file's folder
    await page.click(`#files button.entry[data-path="${path.posix.dirname(cfg.moduleFile)}"]`);
    await page.click(`#files button.entry[data-path="${cfg.moduleFile}"]`);
  });
  await page.waitForFunction(() => document.getElementById('module-classes').textContent !== '', null, {timeout: 10000});
  out.classes = {text: await page.textContent('#module-classes'), options: await page.$$eval('#module-options option', (os) => os.map((o) => o.value)),
    module: await page.inputValue('#module'), open: await page.$eval('#model-details', (d) => d.open)};
  await page.fill('#module', `${cfg.moduleFile}:`);
  await inspectPath(cfg.nonfinite);
  out.emptyClass = await errorBox();
  await page.fill('#module', '');

  // ---------- the assumption controls: Pooling = max reaches the inferred graph ----------
  out.controls = await page.evaluate(() => ({activation: Array.from(document.querySelectorAll('#activation option')).map((o) => o.value),
    pool: Array.from(document.querySelectorAll('#pool option')).map((o) => o.value), selected: document.getElementById('pool').value}));
  await page.selectOption('#pool', 'max');
  await inspectPath(cfg.mnist);
  out.maxPool = {state: await state(), layers: (await tableRows('layers')).map((r) => r[2]),
    notices: await page.$$eval('#inspect-notices .notice', (ns) => ns.map((n) => n.textContent))};
  await page.selectOption('#pool', 'avg');

  // ---------- live status (for the docs) and cancel ----------
  await inspectPath(cfg.big);
  out.bigInspect = await state();
  await page.selectOption('#quantize', 'uint8');
  // Pictured mid-way; the conversion may finish while the picture is taken, which is fine here.
  await convert(cfg.bigShotOut, () => page.locator('#convert-card').screenshot({path: path.join(cfg.artifacts, 'studio-progress.png')}));
  out.screenshots.progress = path.join(cfg.artifacts, 'studio-progress.png');
  // Cancel as soon as the first tensor is written: the rest of the write stage is the margin.
  // float32 writes four times the bytes of uint8 (192 MiB): a margin of seconds, not half of one,
  // for the click to land on a loaded 2-core machine.
  // The click happens inside the page, in the same poll that sees the first tensor event: a round trip
  // from Node per step (read the text, then Playwright's actionability waits) let fast writes finish first.
  await page.selectOption('#quantize', '');
  await page.fill('#out', cfg.bigOut);
  await page.focus('#out');
  await page.keyboard.press('Enter');
  await page.waitForFunction(() => {
    if (!window.studio.events.some((e) => e.type === 'tensor')) return false;
    window.progressMidway = document.getElementById('progress-text').textContent;
    document.getElementById('cancel').click();
    return true;
  }, null, {timeout: 120000, polling: 5});
  const cancelled = await convert(cfg.bigOut, null, {submitted: true});
  out.progressMidway = await page.evaluate(() => window.progressMidway);
  out.cancel = {state: cancelled.state, progress: cancelled.progress,
    tensors: cancelled.events.filter((e) => e.type === 'tensor').length,
    count: (cancelled.events.find((e) => e.type === 'tensor') || {}).count, last: cancelled.events.at(-1)};
  await shot('cancel', '#convert-card');

  // ---------- a dropped (uploaded) file ----------
  await page.setInputFiles('#upload-input', cfg.upload);
  await waitState(['inspected', 'error']);
  out.upload = {state: await state(), path: await page.inputValue('#ckpt-path'),
    status: await page.textContent('#upload-status'), layers: (await tableRows('layers')).length};

  // ---------- keyboard focus is visible ----------
  await page.focus('#metadata');
  await page.keyboard.press('Tab'); // keyboard focus (programmatic focus does not show :focus-visible)
  out.focused = await page.evaluate(() => document.activeElement.id);
  out.focusOutline = await page.$eval('#convert', (b) => getComputedStyle(b).outlineStyle);
  out.contrast = await page.evaluate(lowestContrast);
  out.noHorizontalScroll = await page.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth);
} catch (err) {
  out.fatal = `${err.stack || err}`;
  await shot('fatal').catch(() => {});
}
out.problems = [...problems, ...(await page.evaluate(() => window.cspViolations || []).catch(() => [])).map((c) => `csp: ${c}`)];
out.blockedRequests = browser.blocked;
out.seconds.total = (Date.now() - started) / 1000;
await browser.close();
fs.writeFileSync(process.argv[3], JSON.stringify(out, null, 1));
