'use strict';
// The page talks to the sample's API with the sign-in cookie (same origin, SameSite=Strict); the admin key is kept
// in this page's memory only and sent as X-Api-Key.
const $ = id => document.getElementById(id);
let adminKey = '';
let lastText = '';
let autoSignedIn = false;

async function api(method, path, body, headers) {
  const init = { method, headers: { ...(headers || {}) }, credentials: 'same-origin' };
  if (body !== undefined) { init.headers['Content-Type'] = 'application/json'; init.body = JSON.stringify(body); }
  const r = await fetch(path, init);
  const data = r.headers.get('content-type')?.includes('json') ? await r.json() : null;
  if (!r.ok) throw new Error((data && (data.detail || data.title)) || `HTTP ${r.status}`);
  return data;
}

function text(el, value) { el.textContent = value; return el; }
function el(tag, value) { return text(document.createElement(tag), value ?? ''); }

async function refreshAccount() {
  try {
    const me = await api('GET', '/me');
    text($('who'), `Signed in as ${me.userId}`);
    for (const id of ['signout', 'forget', 'try', 'versions', 'admin']) $(id).hidden = false;
    $('signin').hidden = true;
    await loadIntents();
    await refreshModels();
  } catch {
    text($('who'), 'Not signed in.');
    $('signin').hidden = false;
    for (const id of ['signout', 'forget', 'try', 'versions', 'admin']) $(id).hidden = true;
    if (location.hash === '#signin' && !autoSignedIn) { autoSignedIn = true; await signIn(); } // a link that signs in at once
  }
}

async function loadIntents() {
  const domains = await api('GET', '/intents');
  const select = $('intent');
  select.replaceChildren();
  for (const d of domains) {
    const group = document.createElement('optgroup');
    group.label = d.domain + (d.known ? '' : ' (new)');
    for (const i of d.intents) { const o = el('option', i); o.value = i; group.appendChild(o); }
    select.appendChild(group);
  }
}

async function predict(e) {
  e.preventDefault();
  lastText = $('text').value;
  try {
    const p = await api('POST', '/predict', { text: lastText });
    const box = $('result');
    box.replaceChildren();
    const head = el('div');
    head.appendChild(text(el('span'), p.intent)).className = 'intent';
    head.appendChild(el('span', ` (${p.domain ?? '?'}, ${(p.probability * 100).toFixed(1)}%, served by ${p.version}, ${p.ms} ms)`));
    box.appendChild(head);
    const list = el('ol');
    for (const t of p.top) list.appendChild(el('li', `${t.intent} — ${(t.probability * 100).toFixed(1)}%`));
    box.appendChild(list);
    $('intent').value = p.intent;
    $('feedback-form').hidden = false;
    text($('status'), 'Wrong? Pick the right intent and send a correction.');
  } catch (err) { text($('status'), err.message); }
}

async function sendFeedback(e) {
  e.preventDefault();
  try {
    const r = await api('POST', '/feedback', { text: lastText, intent: $('intent').value });
    text($('status'), `Thanks: correction #${r.sequence} stored. A round starts after a few corrections; watch the versions below.`);
  } catch (err) { text($('status'), err.message); }
}

async function refreshModels() {
  try {
    const m = await api('GET', '/models');
    text($('serving'), `serving ${m.serving}`);
    drawChart(m.versions);
  } catch { /* signed out */ }
}

function drawChart(points) {
  const c = $('chart');
  const g = c.getContext('2d');
  const W = c.width, H = c.height, L = 44, R = 12, T = 12, B = 30;
  g.clearRect(0, 0, W, H);
  g.font = '12px system-ui, sans-serif';
  g.strokeStyle = '#ddd'; g.fillStyle = '#555';
  for (let i = 0; i <= 5; i++) {           // y axis: accuracy 0 .. 1
    const v = i * 0.2, y = T + (H - T - B) * (1 - v);
    g.beginPath(); g.moveTo(L, y); g.lineTo(W - R, y); g.stroke();
    g.fillText(v.toFixed(1), 8, y + 4);
  }
  c.dataset.versions = String(points.length);
  if (points.length === 0) { g.fillText('No versions yet: the first round has not been promoted.', L + 10, H / 2); return; }
  const P = 44; // inner padding, so the first and last labels fit
  const x = i => L + P + (points.length === 1 ? (W - L - R - 2 * P) / 2 : i * (W - L - R - 2 * P) / (points.length - 1));
  const y = v => T + (H - T - B) * (1 - Math.max(0, Math.min(1, v)));
  for (const [key, color] of [['heldOut', '#1f77b4'], ['golden', '#ff7f0e']]) {
    g.strokeStyle = color; g.fillStyle = color; g.lineWidth = 2; g.beginPath();
    let started = false;
    points.forEach((p, i) => {
      if (p[key] == null) return;
      if (started) g.lineTo(x(i), y(p[key])); else { g.moveTo(x(i), y(p[key])); started = true; }
    });
    g.stroke();
    points.forEach((p, i) => { if (p[key] != null) { g.beginPath(); g.arc(x(i), y(p[key]), 3, 0, 2 * Math.PI); g.fill(); } });
  }
  g.fillStyle = '#222'; g.lineWidth = 1;
  g.textAlign = 'center';
  points.forEach((p, i) => g.fillText(p.version + (p.current ? ' (serving)' : ''), x(i), H - 10));
  g.textAlign = 'start';
}

async function showDecisions(e) {
  e.preventDefault();
  adminKey = $('apikey').value;
  const table = $('decisions');
  table.replaceChildren();
  try {
    const d = await api('GET', '/models/decisions', undefined, { 'X-Api-Key': adminKey });
    const head = el('tr');
    for (const h of ['version', 'held-out', 'golden', 'checks', '']) head.appendChild(el('th', h));
    table.appendChild(head);
    for (const v of d.versions) {
      const row = el('tr');
      const dec = v.decision;
      row.appendChild(el('td', `v${v.version}${v.current ? ' (serving)' : ''}`));
      row.appendChild(el('td', dec ? `${fmt(dec.heldOut.serving)} → ${fmt(dec.heldOut.candidate)} (n=${dec.heldOut.count})` : ''));
      row.appendChild(el('td', dec ? `${fmt(dec.golden.serving)} → ${fmt(dec.golden.candidate)} (n=${dec.golden.count})` : ''));
      row.appendChild(el('td', dec ? dec.checks.map(c => `${c.passed ? '✓' : '✗'} ${c.gate}`).join(', ') : ''));
      const cell = el('td');
      if (!v.current) {
        const b = el('button', 'Roll back');
        b.addEventListener('click', async () => {
          try { await api('POST', '/models/rollback', { version: v.version }, { 'X-Api-Key': adminKey }); await refreshModels(); await showDecisions(e); }
          catch (err) { text($('status'), err.message); }
        });
        cell.appendChild(b);
      }
      row.appendChild(cell);
      table.appendChild(row);
    }
    for (const r of d.rounds) {
      const row = el('tr');
      row.appendChild(el('td', `round ${r.round}`));
      row.appendChild(el('td', r.outcome));
      row.appendChild(el('td', `${r.seconds} s`));
      row.appendChild(el('td', r.reasons.join('; ')));
      row.appendChild(el('td'));
      table.appendChild(row);
    }
  } catch (err) { table.appendChild(el('tr')).appendChild(el('td', err.message)); }
}

function fmt(v) { return v == null ? '–' : v.toFixed(3); }

async function signIn() {
  try { await api('POST', '/signin'); } catch (err) { text($('who'), err.message); return; }
  await refreshAccount();
}

$('signin').addEventListener('click', signIn);
$('signout').addEventListener('click', async () => { await api('POST', '/signout'); adminKey = ''; await refreshAccount(); });
$('forget').addEventListener('click', async () => {
  try { const r = await api('DELETE', '/feedback/me'); text($('status'), `Deleted ${r.deleted} of your feedback records.`); }
  catch (err) { text($('status'), err.message); }
});
$('predict-form').addEventListener('submit', predict);
$('feedback-form').addEventListener('submit', sendFeedback);
$('admin-form').addEventListener('submit', showDecisions);
setInterval(refreshModels, 3000);
refreshAccount();
