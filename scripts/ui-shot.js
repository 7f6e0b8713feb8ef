// One screenshot of the Prefect or MLflow UI after what a user would click (screenshots.sh):
//   node scripts/ui-shot.js URL OUT.png WIDTHxHEIGHT [click:TEXT] [metric:NAME]
// click:TEXT clicks the element showing TEXT (a tab); css:SELECTOR clicks the first match (an expander);
// scroll:TEXT brings the element showing TEXT to the top; metric:NAME plots NAME on MLflow's compare view.
// MLflow's assistant panel and first-visit tips are closed first. Needs playwright-core and Debian's chromium.
const { chromium } = require('playwright-core');
(async () => {
  const [url, out, size, ...actions] = process.argv.slice(2);
  const [width, height] = size.split('x').map(Number);
  const browser = await chromium.launch({ executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
           '--disable-component-update', '--disable-sync'] });
  const page = await browser.newPage({ viewport: { width, height } });
  await page.goto(url, { waitUntil: 'load' });
  await page.waitForTimeout(6000);  // the single-page apps fetch their data after load
  for (const label of ['Got it', 'Close']) {  // MLflow's tips and assistant panel
    const el = page.locator(`[aria-label="${label}"], button:has-text("${label}")`).first();
    if (await el.count()) { try { await el.click({ timeout: 2000 }); } catch (e) {} }
  }
  for (const action of actions) {
    const [kind, arg] = [action.slice(0, action.indexOf(':')), action.slice(action.indexOf(':') + 1)];
    if (kind === 'click') {
      await page.getByText(arg, { exact: true }).first().click();
    } else if (kind === 'scroll') {
      await page.getByText(arg, { exact: true }).first().evaluate((el) => el.scrollIntoView({ block: 'start' }));
    } else if (kind === 'css') {
      await page.locator(arg).first().click();
    } else if (kind === 'metric') {
      await page.locator('text=Metrics:').locator('xpath=following::div[contains(@class,"select")][1]').click();
      await page.keyboard.press('Backspace');  // the default metric
      await page.keyboard.type(arg);
      await page.keyboard.press('Enter');
      await page.keyboard.press('Escape');
    }
    await page.waitForTimeout(2500);
  }
  await page.screenshot({ path: out });
  await browser.close();
})();
