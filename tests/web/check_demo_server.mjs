// Open the demo and the tester as served by `python -m writer demo` (its CSP header and all) and
// report what a user would see: prediction, tester state, CSP violations, page errors, headers.
// usage: node check_demo_server.mjs BASE_URL RESULTS.json
import fs from 'node:fs';
import {launch} from './browser.mjs';

const [base, resultsFile] = process.argv.slice(2);
const browser = await launch();
const out = {};

async function open(url) {
  const page = await browser.context.newPage();
  const problems = [];
  page.on('pageerror', (e) => problems.push(`pageerror: ${e.message}`));
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  await page.addInitScript(() => {
    document.addEventListener('securitypolicyviolation', (e) => {
      (window.cspViolations ||= []).push(`${e.violatedDirective} ${e.blockedURI}`);
    });
  });
  const response = await page.goto(url);
  const headers = response.headers();
  return {page, problems, headers};
}

const csp = (page) => page.evaluate(() => window.cspViolations || []);

try {
  {
    const {page, problems, headers} = await open(base);
    await page.waitForFunction(() => ['ready', 'error'].includes(document.body.dataset.state), null, {timeout: 60000});
    await page.waitForSelector('.sample', {timeout: 60000});
    await page.click('.sample[data-index="0"]');
    await page.waitForFunction(() => window.demo.version > 0
      && document.getElementById('prediction').dataset.version === String(window.demo.version), null, {timeout: 60000});
    out.demo = {state: await page.evaluate(() => document.body.dataset.state),
                prediction: (await page.textContent('#prediction')).trim(),
                csp: await csp(page), problems, headers};
    await page.close();
  }
  {
    const {page, problems, headers} = await open(base + 'tester.html?model=model/model.json');
    await page.waitForFunction(() => ['loaded', 'error'].includes(document.body.dataset.state), null, {timeout: 60000});
    out.tester = {state: await page.evaluate(() => document.body.dataset.state),
                  csp: await csp(page), problems, headers};
    await page.close();
  }
} finally {
  await browser.close();
  fs.writeFileSync(resultsFile, JSON.stringify(out, null, 1));
}
