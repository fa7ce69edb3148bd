// Drive web_demo/index.html and tester.html in real Chromium and report what happened as JSON.
//   node tests/web/check_pages.mjs CONFIG.json RESULTS.json
// tests/test_web_demo.py writes the config (server URLs, digits, fixtures) and judges the results;
// this script only acts and observes, so every expectation lives in the Python test.
import fs from 'node:fs';
import path from 'node:path';
import {launch} from './browser.mjs';
import {traceDigit} from './trace.mjs';

const cfg = JSON.parse(fs.readFileSync(process.argv[2], 'utf8'));
const out = {};
const started = Date.now();
const lap = (name, t0) => { (out.seconds ||= {})[name] = (Date.now() - t0) / 1000; };

const browser = await launch();

// A page that records script errors, console errors and CSP violations.
async function openPage(url, viewport = {width: 1280, height: 900}) {
  const page = await browser.context.newPage();
  await page.setViewportSize(viewport);
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      (window.cspViolations ||= []).push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  await page.goto(url);
  page.problems = problems;
  return page;
}

async function pageProblems(page) {
  const csp = await page.evaluate(() => window.cspViolations || []);
  return [...page.problems, ...csp.map((c) => `csp: ${c}`)];
}

const waitState = (page, states, timeout = 60000) => page.waitForFunction(
  (s) => s.includes(document.body.dataset.state), states, {timeout});

// ---------- digit demo ----------

// Samples appear after the model loaded; wait for them so a click cannot miss.
async function isReady(page) {
  if (await page.evaluate(() => document.body.dataset.state) !== 'ready') return false;
  await page.waitForSelector('.sample');
  return true;
}

// Wait until the prediction belongs to the pad's current content, and to a change after `since`.
async function waitPrediction(page, since = -1) {
  await page.waitForFunction((after) => window.demo.version > after
    && document.getElementById('prediction').dataset.version === String(window.demo.version), since);
  return (await page.textContent('#prediction')).trim();
}

const padVersion = (page) => page.evaluate(() => window.demo.version);

// Retrace the digit with real mouse events, the 28x28 frame mapped onto the whole pad.
async function drawDigit(page, pixels) {
  const box = await page.locator('#pad').boundingBox();
  const at = ([x, y]) => [box.x + x * box.width, box.y + y * box.height];
  const before = await padVersion(page);
  for (const stroke of traceDigit(pixels)) {
    await page.mouse.move(...at(stroke[0]));
    await page.mouse.down();
    for (const p of stroke.slice(1)) await page.mouse.move(...at(p));
    await page.mouse.up();
  }
  return waitPrediction(page, before);
}

async function padInkSum(page) {
  return page.evaluate(() => window.demo.padInk().reduce((a, b) => a + b, 0));
}

async function noHorizontalScroll(page) {
  return page.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth);
}

async function shot(page, name) {
  const file = path.join(cfg.artifacts, name);
  await page.screenshot({path: file, fullPage: true, animations: 'disabled'});
  return file;
}

let t0 = Date.now();
{
  // 800 px high: the page's own height, so the screenshot has no empty band at the bottom.
  const page = await openPage(`${cfg.base}index.html`, {width: 1280, height: 800});
  await waitState(page, ['ready', 'error']);
  await isReady(page);
  out.demo = {state: await page.evaluate(() => document.body.dataset.state), error: await page.textContent('#error'),
    backend: await page.inputValue('#backend'), modelInfo: await page.textContent('#model-info')};

  out.drawn = [];
  for (const digit of cfg.digits) {
    await page.click('#clear');
    const t = Date.now();
    const predicted = await drawDigit(page, digit.pixels);
    out.drawn.push({label: digit.label, index: digit.index, predicted, ms: Date.now() - t});
  }
  out.demo.latency = await page.textContent('#latency');
  out.screenshots = {demo1280: await shot(page, 'demo-1280.png')};
  out.demo.noHorizontalScroll1280 = await noHorizontalScroll(page);

  // A single vertical stroke through the middle of the pad.
  await page.click('#clear');
  const box = await page.locator('#pad').boundingBox();
  const before = await padVersion(page);
  await page.mouse.move(box.x + box.width / 2, box.y + box.height * 0.15);
  await page.mouse.down();
  await page.mouse.move(box.x + box.width / 2, box.y + box.height * 0.85, {steps: 12});
  await page.mouse.up();
  out.vertical = {predicted: await waitPrediction(page, before), inkBefore: await padInkSum(page)};

  await page.click('#clear');
  out.clear = {
    predicted: (await page.textContent('#prediction')).trim(),
    ink: await padInkSum(page),
    bars: await page.$$eval('.bar', (bars) => bars.map((b) => Number(b.dataset.p))),
    version: await page.evaluate(() => [document.getElementById('prediction').dataset.version, String(window.demo.version)]),
  };

  out.samples = [];
  const count = await page.locator('.sample').count();
  for (let i = 0; i < count; i++) {
    const before = await padVersion(page);
    await page.click(`.sample[data-index="${i}"]`);
    out.samples.push(await waitPrediction(page, before));
  }
  // The backend menu rebuilds the model there and re-runs the current digit.
  await page.selectOption('#backend', 'cpu');
  await page.waitForFunction(() => document.getElementById('latency').textContent.endsWith('on cpu'));
  out.demo.switched = {prediction: (await page.textContent('#prediction')).trim(), latency: await page.textContent('#latency')};
  out.demo.problems = await pageProblems(page);
  await page.close();
}
lap('demo', t0);

t0 = Date.now();
out.demoBackends = {};
for (const backend of ['cpu', 'wasm', 'webgl']) {
  const page = await openPage(`${cfg.base}index.html?backend=${backend}`);
  await waitState(page, ['ready', 'error']);
  let predicted = null;
  if (await isReady(page)) {
    await page.click('.sample[data-index="0"]');
    predicted = await waitPrediction(page, 0);
  }
  out.demoBackends[backend] = {
    error: await page.textContent('#error'),
    used: await page.evaluate(() => tf.getBackend()), predicted,
    latency: await page.textContent('#latency'), problems: await pageProblems(page),
  };
  await page.close();
}
lap('demoBackends', t0);

t0 = Date.now();
{
  const page = await openPage(`${cfg.base}index.html`, {width: 375, height: 812});
  await waitState(page, ['ready', 'error']);
  await drawDigit(page, cfg.digits[0].pixels);
  out.demo.noHorizontalScroll375 = await noHorizontalScroll(page);
  out.screenshots.demo375 = await shot(page, 'demo-375.png');
  await page.close();
}
lap('demo375', t0);

// The demo served by `python -m writer demo XSS_MODEL`: model text must stay text.
t0 = Date.now();
{
  const page = await openPage(cfg.xssDemo);
  await waitState(page, ['ready', 'error']);
  if (await isReady(page)) {
    await page.click('.sample[data-index="0"]');
    await waitPrediction(page, 0);
  }
  out.xssDemo = {
    error: await page.textContent('#error'),
    state: await page.evaluate(() => document.body.dataset.state),
    modelInfo: await page.textContent('#model-info'),
    labels: await page.$$eval('.bar-label', (els) => els.map((e) => e.textContent)),
    prediction: await page.textContent('#prediction'),
    images: await page.evaluate(() => document.querySelectorAll('img').length),
    problems: await pageProblems(page),
  };
  await page.close();
}
lap('xssDemo', t0);

// ---------- model tester ----------

async function testerLoadUrl(page, url) {
  await page.fill('#model-url', url);
  await page.click('#load-url');
  await waitState(page, ['loaded', 'error']);
}

async function testerReport(page) {
  return page.evaluate(() => ({
    state: document.body.dataset.state,
    error: document.getElementById('error').hidden ? '' : document.getElementById('error').textContent,
    status: document.getElementById('status').textContent,
    modelShown: !document.getElementById('model-card').hidden,
    summary: document.getElementById('summary').textContent,
    layers: Array.from(document.querySelectorAll('#layers tbody tr')).map((tr) => Array.from(tr.cells).map((c) => c.textContent)),
    metadata: document.getElementById('metadata').textContent,
    warnings: document.getElementById('warnings').textContent,
    images: document.querySelectorAll('img').length,
  }));
}

async function testerRun(page, backend, mode, json) {
  await page.selectOption('#backend', backend);
  await page.check(`input[name="mode"][value="${mode}"]`);
  if (json) await page.fill('#json-input', json);
  await page.fill('#runs', String(cfg.runs));
  await page.click('#run');
  await waitState(page, ['done', 'error']);
  const state = await page.evaluate(() => document.body.dataset.state);
  const result = await page.getAttribute('#outputs', 'data-result');
  return {state, error: state === 'error' ? await page.textContent('#error') : '',
    stats: await page.textContent('#stats'), result: result ? JSON.parse(result) : null};
}

t0 = Date.now();
{
  const page = await openPage(`${cfg.base}tester.html`);
  await testerLoadUrl(page, 'model/model.json');
  out.tester = {demoModel: await testerReport(page), runs: {}};
  const json = JSON.stringify(cfg.testerInput);
  for (const backend of ['cpu', 'wasm', 'webgl']) {
    out.tester.runs[backend] = await testerRun(page, backend, 'json', json);
  }
  out.tester.random = await testerRun(page, 'wasm', 'random');
  // An uploaded picture: dark digit on white, inverted back to MNIST's white on black.
  await page.check('input[name="mode"][value="image"]');
  await page.setInputFiles('#image-input', cfg.image);
  await page.check('#image-invert');
  out.tester.image = await testerRun(page, 'cpu', 'image');
  out.tester.noHorizontalScroll1280 = await noHorizontalScroll(page);
  out.screenshots.tester1280 = await shot(page, 'tester-1280.png');
  out.tester.problems = await pageProblems(page);

  await page.setViewportSize({width: 375, height: 812});
  out.tester.noHorizontalScroll375 = await noHorizontalScroll(page);
  out.screenshots.tester375 = await shot(page, 'tester-375.png');
  await page.setViewportSize({width: 1280, height: 900});

  // Local files: several files, then a whole folder.
  await page.setInputFiles('#files-input', cfg.fileSets.complete);
  await waitState(page, ['loaded', 'error']);
  out.tester.files = await testerReport(page);
  await page.setInputFiles('#folder-input', cfg.folder);
  await waitState(page, ['loaded', 'error']);
  out.tester.folder = await testerReport(page);
  await page.setInputFiles('#files-input', cfg.fileSets.missingShard);
  await waitState(page, ['loaded', 'error']);
  out.tester.filesMissingShard = await testerReport(page);

  // Broken models over HTTP.
  out.tester.broken = {};
  for (const [name, url] of Object.entries(cfg.broken)) {
    await testerLoadUrl(page, url);
    out.tester.broken[name] = await testerReport(page);
  }
  await testerLoadUrl(page, cfg.xssModel);
  out.tester.xss = await testerReport(page);
  out.tester.xss.problems = (await pageProblems(page)).filter((p) => !p.startsWith('console: Failed to load resource'));
  await page.close();
}
lap('tester', t0);

// A page that is opened with ?model= shows the model without any click.
t0 = Date.now();
{
  const page = await openPage(`${cfg.base}tester.html?model=model/model.json`);
  await waitState(page, ['loaded', 'error']);
  out.tester.queryParam = await testerReport(page);
  await page.close();
}
lap('testerQuery', t0);

out.blockedRequests = browser.blocked;
await browser.close();
out.seconds.total = (Date.now() - started) / 1000;
fs.writeFileSync(process.argv[3], JSON.stringify(out, null, 1));
