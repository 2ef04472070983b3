// The control plane's web console. Hand-written, no build step, no
// dependencies: it calls the control plane's own HTTP API v1 with fetch and
// builds the page with DOM calls (text is always set as text, never parsed
// as HTML). Screens live behind "#/..." addresses.
'use strict';

(() => {
  // ---------------------------------------------------------------- state

  const state = {
    csrf: '', // the session's CSRF token, sent with every state change
    stop: null, // ends the current screen's timers
  };

  // --------------------------------------------------------------- words

  const STATUS = {
    online: 'Online', offline: 'Offline', draining: 'Draining', pending: 'Not enrolled yet', revoked: 'Revoked',
  };
  const BACKENDS = { aws: 'AWS Secrets Manager', azure: 'Azure Key Vault', file: 'Local file' };
  const KINDS = { ghes: 'GitHub Actions Enterprise Server', github_cloud: 'GitHub Actions Cloud' };
  const JOB_KINDS = {
    resolve_credentials: 'Resolve credentials', test_connection: 'Test connection', list_organizations: 'List organizations',
  };
  const TOKEN_TYPES = {
    classic_pat: 'Personal access token (classic)',
    fine_grained_pat: 'Fine-grained personal access token',
    github_app: 'GitHub App installation token',
  };
  const GITHUB_CLOUD_URL = 'https://github.com';

  // What each OAuth scope the platform asks for is needed for.
  const SCOPE_PURPOSE = {
    repo: 'create and manage the repositories the platform provisions (code, pull requests, commit statuses)',
    'repo:status': 'report build statuses on commits',
    public_repo: 'work with public repositories',
    workflow: 'add and update the GitHub Actions workflow files in those repositories',
    'write:packages': 'publish build artifacts and container images to GitHub Packages',
    'read:packages': 'pull packages and container images in pipelines',
    'delete:packages': 'clean up old package versions',
    'admin:org': "manage the organization's teams, members and settings",
    'write:org': "change the organization's teams and membership",
    'read:org': 'read the organization, its teams and members',
    'manage_runners:org': "register and remove the organization's self-hosted runners",
    'manage_runners:enterprise': "register and remove the enterprise's self-hosted runners",
    notifications: 'read the notifications of the account',
    user: 'read the profile and e-mail addresses of the account',
    'read:user': 'read the profile of the account',
    delete_repo: 'delete the repositories the platform created',
    'admin:enterprise': "manage the enterprise's settings and runners",
    audit_log: "read the organization's and the enterprise's audit log",
    codespace: 'create and manage codespaces',
    project: 'manage projects (planning boards)',
    'read:project': 'read projects',
    'admin:repo_hook': 'manage repository webhooks',
    'admin:org_hook': 'manage organization webhooks',
    'admin:public_key': 'manage the SSH keys of the account',
    'admin:gpg_key': 'manage the GPG keys of the account',
    gist: 'create gists',
  };

  // What to do about each error code.
  const ERROR_HELP = {
    invalid_params: ['The details are not valid', 'Correct the field the message names.'],
    secret_not_found: ['The secret was not found', 'Check the secret name (or vault and secret names) and that the secret exists in the secret manager the agent uses.'],
    secret_access_denied: ['The agent may not read the secret', "Give the agent's identity read access to this secret (AWS: secretsmanager:GetSecretValue; Azure: the Key Vault Secrets User role)."],
    secret_malformed: ['The secret does not hold what was expected', 'The secret must hold a JSON object with the username and password keys named here; the message lists the keys found.'],
    secret_backend_unavailable: ['The secret manager did not answer', 'Try again in a moment; check that the agent can reach the secret manager.'],
    host_not_allowed: ["The agent's policy does not send this secret to this GitHub", "Add the origin the message names to policy.secrets[N].hosts in the agent's config."],
    secret_not_allowed: ["The agent's policy does not allow this secret", "Add a rule for this secret to policy.secrets in the agent's config."],
    kind_not_allowed: ['The agent does not run this kind of job', "Add test_connection and list_organizations to policy.job_kinds in the agent's config."],
    github_unreachable: ['GitHub could not be reached from the agent', "Check the URL, DNS, the firewall and the agent's proxy settings (github.proxy or HTTPS_PROXY); for a 5xx, try again later."],
    github_tls: ["GitHub's certificate is not trusted", "Add the CA that issued it (PEM) to github.ca_file in the agent's config; behind a TLS-inspecting proxy, the proxy's CA."],
    github_bad_credentials: ['GitHub refused the token', 'The token is wrong, expired or revoked: put a valid token in the secret.'],
    github_forbidden: ['GitHub forbade the request', "Give the token the permission the message names; check the organization's and enterprise's policies (IP allow list, token policy)."],
    github_sso_required: ['The organization requires SAML single sign-on', 'Authorize the token for the organization (token settings, Configure SSO), or open the link in the message.'],
    github_rate_limited: ["GitHub's rate limit was reached", 'Try again after the reset time in the message.'],
    github_not_found: ['GitHub did not find it', 'Check the URL and the kind (Enterprise Server or Cloud), and the organization.'],
    timeout: ['The agent did not finish in time', 'Try again; if it keeps happening, check why GitHub or the secret manager is slow.'],
    canceled: ['The job was canceled', 'Run it again.'],
    agent_offline: ['The agent is offline', "Start the agent, or read its logs for why it cannot connect."],
    agent_revoked: ['The agent is revoked', 'Pick another agent for this connection.'],
    agent_busy: ['The agent is busy', 'Try again in a moment.'],
    password_required: ['The connection is protected', 'Enter its password.'],
    password_invalid: ['The password is wrong', 'Enter the password the connection was protected with.'],
    too_many_attempts: ['Too many wrong passwords', 'Wait a minute, then try again.'],
    conflict: ['It already exists or changed meanwhile', 'Pick another name, or reload and try again.'],
    unauthorized: ['Not signed in', 'Sign in again with the admin token.'],
    internal: ['Something went wrong in the agent or the control plane', 'The logs say more under the job id.'],
  };

  // -------------------------------------------------------------- helpers

  // h builds an element: h('p', {class: 'x', text: 'hi'}, child, ...).
  function h(tag, props, ...children) {
    const el = document.createElement(tag);
    for (const [k, v] of Object.entries(props || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'class') el.className = v;
      else if (k === 'text') el.textContent = v;
      else if (k === 'for') el.htmlFor = v;
      else if (k === 'value') el.value = v;
      else if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else if (k === 'checked' || k === 'disabled' || k === 'readOnly' || k === 'hidden' || k === 'selected' || k === 'required') el[k] = Boolean(v);
      else el.setAttribute(k, v === true ? '' : String(v));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return el;
  }

  function icon(name) {
    return document.getElementById('icon-' + name).content.firstElementChild.cloneNode(true);
  }

  const $ = (sel, root) => (root || document).querySelector(sel);

  function fmtTime(iso) {
    if (!iso) return '';
    return new Date(iso).toLocaleString(undefined, { dateStyle: 'medium', timeStyle: 'medium' });
  }

  function relTime(iso) {
    if (!iso) return '';
    const s = Math.round((Date.now() - new Date(iso).getTime()) / 1000);
    const a = Math.abs(s);
    let t;
    if (a < 5) return 'just now';
    if (a < 60) t = a + ' s';
    else if (a < 3600) t = Math.round(a / 60) + ' min';
    else if (a < 86400) t = Math.round(a / 3600) + ' h';
    else t = Math.round(a / 86400) + ' d';
    return s >= 0 ? t + ' ago' : 'in ' + t;
  }

  // timeEl shows a time relative to now, with the exact time on hover.
  function timeEl(iso, prefix) {
    if (!iso) return h('span', { class: 'faint', text: '—' });
    return h('time', { datetime: iso, title: fmtTime(iso), 'data-prefix': prefix || '', text: (prefix || '') + relTime(iso) });
  }

  // refreshTimes keeps the relative times of the page current.
  function refreshTimes(root) {
    for (const t of (root || document).querySelectorAll('time[data-prefix]')) {
      const text = t.dataset.prefix + relTime(t.getAttribute('datetime'));
      if (t.textContent !== text) t.textContent = text;
    }
  }

  function fmtMS(ms) {
    if (ms === undefined || ms === null) return '';
    if (ms < 1000) return ms + ' ms';
    if (ms < 60000) return (ms / 1000).toFixed(1) + ' s';
    return Math.round(ms / 60000) + ' min';
  }

  function backendLabel(b) {
    const name = BACKENDS[b.name] || b.name;
    const where = b.settings && (b.settings.region || b.settings.cloud);
    return where ? name + ' · ' + where : name;
  }

  function toast(msg) {
    const t = $('#toast');
    t.textContent = msg;
    t.dataset.screens = '1';
    t.classList.add('show');
    clearTimeout(toast.timer);
    toast.timer = setTimeout(() => t.classList.remove('show'), 3500);
  }

  async function copy(text, button) {
    try {
      await navigator.clipboard.writeText(text);
      const was = button.textContent;
      button.textContent = 'Copied';
      setTimeout(() => { button.textContent = was; }, 1500);
    } catch {
      toast('Copying is not allowed here: select the text and copy it.');
    }
  }

  function copyButton(getText, label) {
    const b = h('button', { type: 'button', class: 'btn btn-small', text: 'Copy', 'aria-label': label });
    b.addEventListener('click', () => copy(getText(), b));
    return b;
  }

  // every runs fn now and then every ms until the screen changes.
  function every(ms, fn) {
    let timer = null;
    let stopped = false;
    const tick = async () => {
      try { await fn(); } catch (e) { if (!(e instanceof APIError)) console.error(e); }
      if (!stopped) timer = setTimeout(tick, ms);
    };
    tick();
    return () => { stopped = true; clearTimeout(timer); };
  }

  // ------------------------------------------------------------------ API

  class APIError extends Error {
    constructor(status, code, message) {
      super(message);
      this.status = status;
      this.code = code;
    }
  }

  // api calls the HTTP API v1 with the session cookie. A state change
  // carries the CSRF token; password is a protected connection's password.
  async function api(method, path, body, password) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method !== 'GET' && method !== 'HEAD') headers['X-CSRF-Token'] = state.csrf;
    if (password) headers['X-Connection-Password'] = password;
    let res;
    try {
      res = await fetch(path, {
        method, headers, credentials: 'same-origin', cache: 'no-store', redirect: 'error',
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new APIError(0, 'unavailable', 'The control plane did not answer; check the network and try again.');
    }
    let data = null;
    if (res.status !== 204) {
      try { data = await res.json(); } catch { data = null; }
    }
    if (!res.ok) {
      const err = (data && data.error) || {};
      const e = new APIError(res.status, err.code || 'internal', err.message || 'HTTP ' + res.status);
      if (res.status === 401 && path !== '/api/v1/session' && state.csrf) {
        state.csrf = '';
        showSignIn('Your session has ended. Sign in again.');
      }
      throw e;
    }
    return data;
  }

  // --------------------------------------------------------------- fields

  // field builds a labelled input with its hint and its error slot.
  function field(o) {
    const hintID = o.id + '-hint';
    const errID = o.id + '-error';
    const input = o.input || h('input', {
      id: o.id, name: o.id, type: o.type || 'text', value: o.value || '', placeholder: o.placeholder,
      autocomplete: o.autocomplete || 'off', spellcheck: 'false', readOnly: o.readonly,
    });
    input.id = o.id;
    input.setAttribute('aria-describedby', (o.hint ? hintID + ' ' : '') + errID);
    const hint = o.hint ? h('div', { class: 'hint', id: hintID }, o.hint) : null;
    const err = h('div', { class: 'error', id: errID, hidden: true });
    const wrap = h('div', { class: 'field' }, h('label', { for: o.id, text: o.label }), input, hint, err);
    return {
      wrap, input, hint,
      setError(msg) {
        err.replaceChildren();
        if (msg) {
          append(err, [icon('alert'), h('span', { text: msg })]);
          err.hidden = false;
          input.setAttribute('aria-invalid', 'true');
        } else {
          err.hidden = true;
          input.removeAttribute('aria-invalid');
        }
      },
    };
  }

  // ------------------------------------------------------------- dialogs

  // openDialog shows a modal dialog; it is removed from the page when closed.
  function openDialog(o) {
    const titleID = 'dialog-title-' + Math.random().toString(36).slice(2);
    const body = h('div', { class: 'dialog-body' }, h('h2', { id: titleID, text: o.title }));
    const foot = h('div', { class: 'dialog-foot' });
    const d = h('dialog', { class: o.wide ? 'wide' : '', 'aria-labelledby': titleID, id: o.id }, body, foot);
    d.addEventListener('close', () => { d.remove(); if (o.onClose) o.onClose(); });
    document.body.append(d);
    const api = {
      dialog: d, body, foot,
      setTitle(t) { $('#' + titleID, d).textContent = t; },
      close() { if (d.open) d.close(); },
    };
    d.showModal();
    return api;
  }

  function confirmDialog(o) {
    return new Promise((resolve) => {
      let answer = false;
      const dlg = openDialog({ title: o.title, id: 'confirm-dialog', onClose: () => resolve(answer) });
      append(dlg.body, o.text.map((p) => h('p', { text: p })));
      const cancel = h('button', { type: 'button', class: 'btn', text: 'Cancel', id: 'confirm-cancel', onclick: () => dlg.close() });
      const ok = h('button', {
        type: 'button', class: o.danger ? 'btn btn-danger solid' : 'btn btn-primary', text: o.confirm, id: 'confirm-ok',
        onclick: () => { answer = true; dlg.close(); },
      });
      append(dlg.foot, [cancel, ok]);
      cancel.focus();
    });
  }

  // -------------------------------------------------------------- sign in

  function showSignIn(message) {
    if (state.stop) { state.stop(); state.stop = null; }
    document.querySelectorAll('dialog').forEach((d) => d.close());
    $('#topbar').hidden = true;
    document.title = 'Sign in · Orchestrator console';
    const main = $('#main');
    const f = field({
      id: 'signin-token', label: 'Admin token', type: 'password', autocomplete: 'current-password',
      hint: "The control plane's admin token: in DATA/admin-token on its machine, or the file --admin-token-file names.",
    });
    const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'signin-submit', text: 'Sign in' });
    const form = h('form', { novalidate: true, 'aria-labelledby': 'signin-title' },
      f.wrap, h('div', { class: 'btn-row' }, submit));
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      const token = f.input.value.trim();
      if (!token) { f.setError('Enter the admin token.'); f.input.focus(); return; }
      submit.disabled = true;
      try {
        const s = await api('POST', '/api/v1/session', { token });
        state.csrf = s.csrf_token;
        f.input.value = '';
        if (!location.hash.startsWith('#/')) history.replaceState(null, '', '#/agents');
        startApp();
      } catch (e) {
        f.setError(e.status === 401 ? 'This is not the admin token.' : e.message);
        f.input.focus();
      } finally {
        submit.disabled = false;
      }
    });
    main.replaceChildren(h('div', { class: 'signin' },
      h('div', { class: 'brand' }, h('img', { src: '/ui/icon.svg', alt: '', class: 'brand-mark' }), h('span', { text: 'Orchestrator' })),
      h('div', { class: 'card' }, h('div', { class: 'card-body' },
        h('h1', { id: 'signin-title', text: 'Sign in to the console' }),
        h('p', { class: 'lead', text: 'Agents, CI/CD connections and jobs of this control plane.' }),
        message ? h('p', { class: 'notice warn', role: 'alert', text: message }) : null,
        form))));
    f.input.focus();
  }

  async function signOut() {
    try { await api('DELETE', '/api/v1/session'); } catch { /* signed out either way */ }
    state.csrf = '';
    showSignIn('You have signed out.');
  }

  function startApp() {
    $('#topbar').hidden = false;
    route();
  }

  // --------------------------------------------------------------- router

  const routes = [
    [/^#\/agents$/, 'agents', screenAgents],
    [/^#\/connections$/, 'connections', screenConnections],
    [/^#\/connections\/new$/, 'connections', screenNewConnection],
    [/^#\/connections\/([A-Za-z0-9_-]+)$/, 'connections', screenConnection],
    [/^#\/jobs$/, 'jobs', screenJobs],
    [/^#\/jobs\/([A-Za-z0-9_-]+)$/, 'jobs', screenJob],
  ];

  function route() {
    if (!state.csrf) return;
    if (!location.hash.startsWith('#/')) history.replaceState(null, '', '#/agents');
    if (state.stop) { state.stop(); state.stop = null; }
    // A note outlives the screen that made it only into the next one.
    const note = $('#toast');
    if (note.dataset.screens === '1') note.dataset.screens = '0';
    else note.classList.remove('show');
    let found = null;
    for (const [re, nav, fn] of routes) {
      const m = location.hash.match(re);
      if (m) { found = [nav, fn, m.slice(1)]; break; }
    }
    if (!found) { location.replace('#/agents'); return; }
    const [nav, fn, args] = found;
    document.querySelectorAll('.mainnav a').forEach((a) => {
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    });
    const main = $('#main');
    main.replaceChildren();
    const stop = fn(main, ...args);
    state.stop = typeof stop === 'function' ? stop : null;
    main.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }

  function pageHead(title, subtitle, ...actions) {
    document.title = title + ' · Orchestrator console';
    return h('div', { class: 'page-head' },
      h('div', {}, h('h1', { text: title }), subtitle ? h('p', { text: subtitle }) : null),
      actions.length ? h('div', { class: 'btn-row' }, actions) : null);
  }

  // keyedRows updates a table body in place: a row is rebuilt only when what
  // it shows changed, and keyboard focus stays on the same control.
  function keyedRows(tbody, items, key, build, emptyRow) {
    const active = document.activeElement;
    const activeRow = active && active.closest && active.closest('tr[data-key]');
    const focusKey = activeRow && tbody.contains(activeRow) ? [activeRow.dataset.key, active.dataset.action] : null;
    const old = new Map([...tbody.querySelectorAll('tr[data-key]')].map((tr) => [tr.dataset.key, tr]));
    const rows = [];
    for (const item of items) {
      const k = key(item);
      const sig = JSON.stringify(item);
      let tr = old.get(k);
      if (!tr || tr.dataset.sig !== sig) {
        tr = build(item);
        tr.dataset.key = k;
        tr.dataset.sig = sig;
      }
      rows.push(tr);
    }
    if (!rows.length && emptyRow) rows.push(emptyRow);
    tbody.replaceChildren(...rows);
    refreshTimes(tbody);
    if (focusKey && focusKey[1]) {
      const tr = [...tbody.querySelectorAll('tr[data-key]')].find((r) => r.dataset.key === focusKey[0]);
      const el = tr && tr.querySelector('[data-action="' + focusKey[1] + '"]');
      if (el && el !== document.activeElement) el.focus();
    }
  }

  function emptyRow(cols, text) {
    return h('tr', {}, h('td', { colspan: cols, class: 'empty' }, text));
  }

  // --------------------------------------------------------------- agents

  function screenAgents(main) {
    const tbody = h('tbody', { id: 'agents-body' });
    const summary = h('span', { class: 'muted', id: 'agents-summary' });
    const register = h('button', { type: 'button', class: 'btn btn-primary', id: 'register-agent', text: 'Register agent', onclick: registerAgent });
    main.append(
      pageHead('Agents', "Agents run in customers' networks, read secrets there and call GitHub; they connect out to this control plane.", register),
      h('div', { class: 'card' },
        h('div', { class: 'toolbar' }, summary, h('span', { class: 'live', text: 'Live: updates every 2 seconds' })),
        h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'Agents' },
          h('thead', {}, h('tr', {}, ['Name', 'Status', 'Version', 'Host', 'Secret managers', 'Connected', 'Jobs running', ''].map((c) => h('th', { scope: 'col', text: c })))),
          tbody))));

    const load = async () => {
      const list = await api('GET', '/api/v1/agents');
      const n = list.agents.length;
      const online = list.agents.filter((a) => a.status === 'online' || a.status === 'draining').length;
      summary.textContent = n ? n + (n === 1 ? ' agent, ' : ' agents, ') + online + ' online' : '';
      keyedRows(tbody, list.agents, (a) => a.id, agentRow,
        emptyRow(8, [h('p', { text: 'No agents yet.' }), h('p', { class: 'muted', text: "Register one, then enroll it on a VM in the customer's network." })]));
    };
    return every(2000, load);

    function agentRow(a) {
      const live = a.status === 'online' || a.status === 'draining';
      const actions = [];
      if (a.status !== 'revoked' && !live) {
        actions.push(h('button', { type: 'button', class: 'btn btn-small', 'data-action': 'token', text: 'New token', 'aria-label': 'New enrollment token for ' + a.name, onclick: () => newToken(a) }));
      }
      if (a.status !== 'revoked') {
        actions.push(h('button', { type: 'button', class: 'btn btn-small btn-danger', 'data-action': 'revoke', text: 'Revoke', 'aria-label': 'Revoke agent ' + a.name, onclick: () => revokeAgent(a) }));
      }
      let connected;
      if (live) connected = timeEl(a.connected_since);
      else if (a.status === 'revoked') connected = h('span', { class: 'muted', title: fmtTime(a.revoked_at), text: 'offline · revoked ' + relTime(a.revoked_at) });
      else if (a.last_seen) connected = h('span', { class: 'muted' }, timeEl(a.last_seen, 'offline · last seen '));
      else connected = h('span', { class: 'faint', text: '—' });
      return h('tr', { 'data-agent-name': a.name, 'data-agent-id': a.id },
        h('td', {}, h('strong', { text: a.name }), h('span', { class: 'sub mono', text: a.id })),
        h('td', {}, h('span', { class: 'badge', 'data-status': a.status, text: STATUS[a.status] || a.status })),
        h('td', { text: a.agent_version || '—' }),
        h('td', {}, a.hostname || h('span', { class: 'faint', text: '—' }), a.os ? h('span', { class: 'sub', text: a.os }) : null),
        h('td', {}, (a.backends || []).length ? a.backends.map((b) => h('span', { class: 'chip', text: backendLabel(b) })) : h('span', { class: 'faint', text: '—' })),
        h('td', { class: 'nowrap' }, connected),
        h('td', { class: 'num', text: live ? String(a.running_jobs) : '—' }),
        h('td', { class: 'actions' }, h('div', { class: 'btn-row end' }, actions)));
    }

    function registerAgent() {
      const dlg = openDialog({ title: 'Register an agent', id: 'register-dialog', wide: true });
      const f = field({
        id: 'agent-name', label: 'Name',
        hint: "1 to 64 letters, digits, '.', '_' or '-': for example the VM's name, vm-eu-1.",
      });
      const formID = 'register-form';
      const form = h('form', { id: formID, novalidate: true }, f.wrap);
      const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'register-submit', form: formID, text: 'Register agent' });
      append(dlg.body, [h('p', { class: 'muted', text: 'The answer holds a single-use enrollment token, shown once, to enroll the agent on its VM.' }), form]);
      append(dlg.foot, [h('button', { type: 'button', class: 'btn', text: 'Cancel', onclick: () => dlg.close() }), submit]);
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        const name = f.input.value.trim();
        if (!/^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/.test(name)) {
          f.setError("Use 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit.");
          f.input.focus();
          return;
        }
        submit.disabled = true;
        try {
          const r = await api('POST', '/api/v1/agents', { name });
          showToken(dlg, r);
          load();
        } catch (e) {
          f.setError(e.code === 'conflict' ? 'An agent with this name exists already.' : e.message);
          f.input.focus();
          submit.disabled = false;
        }
      });
      f.input.focus();
    }

    async function newToken(a) {
      const ok = await confirmDialog({
        title: 'New enrollment token for ' + a.name + '?',
        text: ['Use it to enroll the agent again: on a new VM, or after its key was lost. Tokens given out before for this agent stop working.'],
        confirm: 'Create token',
      });
      if (!ok) return;
      try {
        const r = await api('POST', '/api/v1/agents/' + encodeURIComponent(a.id) + '/enrollment-token');
        showToken(openDialog({ title: '', id: 'register-dialog', wide: true }), r);
        load();
      } catch (e) { toast(e.message); }
    }

    async function revokeAgent(a) {
      const ok = await confirmDialog({
        title: 'Revoke agent ' + a.name + '?',
        text: [
          "Its key is refused from now on and its session closes at once. Jobs for it fail, and the connections that use it stop working until they are given another agent.",
          'This cannot be undone: to use the machine again, register a new agent.',
        ],
        confirm: 'Revoke agent', danger: true,
      });
      if (!ok) return;
      try {
        await api('DELETE', '/api/v1/agents/' + encodeURIComponent(a.id));
        toast('Agent ' + a.name + ' is revoked.');
        load();
      } catch (e) { toast(e.message); }
    }
  }

  // showToken shows an enrollment token once, with the commands that use it.
  function showToken(dlg, r) {
    const origin = location.origin;
    const insecure = location.protocol === 'http:' ? ' --insecure-allow-ws' : '';
    const token = r.enrollment_token.token;
    const expires = r.enrollment_token.expires_at;
    const linux = [
      'sudo agent enroll --control-plane ' + origin + ' --token ' + token + insecure + ' \\',
      '  --state-dir /var/lib/orchestrator-agent',
      'sudo agent install --config /etc/orchestrator-agent/agent.yaml',
      'sudo systemctl start orchestrator-agent',
    ].join('\n');
    const windows = [
      '.\\agent.exe enroll --control-plane ' + origin + ' --token ' + token + insecure + ' `',
      '  --state-dir "C:\\ProgramData\\orchestrator-agent"',
      '.\\agent.exe install --config "C:\\ProgramData\\orchestrator-agent\\agent.yaml"',
      'Start-Service orchestrator-agent',
    ].join('\n');
    dlg.setTitle('Enroll agent ' + r.agent.name);
    const done = h('button', { type: 'button', class: 'btn btn-primary', id: 'enroll-done', text: 'Done: I have copied it', onclick: () => dlg.close() });
    dlg.body.replaceChildren(dlg.body.firstElementChild,
      h('p', { class: 'notice warn', id: 'enroll-once' },
        h('strong', { text: 'Copy the token now: it is shown only this once. ' }),
        'It works for one enrollment and expires ',
        h('time', { datetime: expires, id: 'enroll-expiry', text: fmtTime(expires) }),
        ' (' + relTime(expires) + ').'),
      h('div', { class: 'label', id: 'enroll-token-label', text: 'Enrollment token' }),
      h('div', { class: 'secret-box' },
        h('code', { id: 'enroll-token', 'aria-labelledby': 'enroll-token-label', text: token }),
        copyButton(() => token, 'Copy the enrollment token')),
      h('div', { class: 'cmd-head' }, h('h3', { text: 'On a Linux VM (as root)' }), copyButton(() => linux, 'Copy the Linux commands')),
      h('pre', { class: 'cmd', id: 'cmd-linux', text: linux }),
      h('div', { class: 'cmd-head' }, h('h3', { text: 'On Windows (PowerShell as Administrator)' }), copyButton(() => windows, 'Copy the Windows commands')),
      h('pre', { class: 'cmd', id: 'cmd-windows', text: windows }),
      h('p', { class: 'muted' },
        'First put the agent binary on the VM and write its config (see ', h('code', { text: 'deploy/agent.example.yaml' }),
        '): its secret manager and its policy, which lists the GitHub hosts each secret may be sent to.',
        insecure ? ' This control plane is served over plain http, so the agent needs --insecure-allow-ws (development only).' : ''));
    dlg.foot.replaceChildren(done);
    done.focus();
  }

  // ---------------------------------------------------------- connections

  function lockMark(text) {
    return h('span', { class: 'lock', title: 'Protected by a password' }, icon('lock'),
      h('span', { class: text ? '' : 'sr-only', text: text || 'Protected by a password' }));
  }

  function screenConnections(main) {
    const tbody = h('tbody', { id: 'connections-body' });
    main.append(
      pageHead('CI/CD connections', 'GitHub connections that pipelines use; each reaches GitHub through an agent that holds the credentials.',
        h('a', { class: 'btn btn-primary', href: '#/connections/new', id: 'add-connection', text: 'Add connection' })),
      h('div', { class: 'card' }, h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'CI/CD connections' },
        h('thead', {}, h('tr', {}, ['Name', 'Kind', 'GitHub URL', 'Agent', 'Organization', 'Last test'].map((c) => h('th', { scope: 'col', text: c })))),
        tbody))));
    const load = async () => {
      const [list, agents] = await Promise.all([api('GET', '/api/v1/connections'), api('GET', '/api/v1/agents')]);
      const names = new Map(agents.agents.map((a) => [a.id, a]));
      keyedRows(tbody, list.connections.map((c) => ({ c, a: names.get(c.agent_id) })), (x) => x.c.id, ({ c, a }) => {
        const locked = c.locked;
        const withheld = () => h('span', { class: 'faint', text: 'Locked' });
        let last;
        if (locked) last = withheld();
        else if (!c.last_test) last = h('span', { class: 'faint', text: 'Not tested' });
        else last = h('span', {}, h('span', { class: 'badge ' + (c.last_test.ok ? 'ok' : 'danger'), text: c.last_test.ok ? 'Works' : 'Failed' }),
          ' ', h('span', { class: 'sub' }, c.last_test.ok ? '' : (c.last_test.error && c.last_test.error.code) + ' · ', timeEl(c.last_test.at)));
        const href = '#/connections/' + encodeURIComponent(c.id);
        return h('tr', { 'data-connection-name': c.name, 'data-connection-id': c.id },
          h('td', {}, h('a', { href, 'data-action': 'open', class: 'conn-link' }, h('strong', { text: c.name })), ' ',
            c.protected ? lockMark() : null, c.active ? null : h('span', { class: 'sub', text: 'inactive' })),
          h('td', { text: KINDS[c.kind] || c.kind }),
          h('td', {}, locked ? withheld() : h('span', { class: 'mono', text: c.github_url })),
          h('td', {}, a ? a.name : h('span', { class: 'mono', text: c.agent_id }), a ? h('span', { class: 'sub' }, h('span', { class: 'badge', 'data-status': a.status, text: STATUS[a.status] || a.status })) : null),
          h('td', {}, locked ? withheld() : (c.organization || h('span', { class: 'faint', text: '—' }))),
          h('td', {}, last));
      }, emptyRow(6, [h('p', { text: 'No connections yet.' }), h('p', { class: 'muted', text: 'Add one to let pipelines reach a GitHub through an agent.' })]));
    };
    return every(5000, load);
  }

  // checkGitHubURL follows the control plane's rules (NormalizeGitHubURL):
  // it returns {value} (the form that will be saved) or {error}.
  function checkGitHubURL(kind, raw) {
    if (!raw) return { error: 'Enter the GitHub URL.' };
    if (/[\s\\]/.test(raw)) return { error: 'The URL holds a space or a backslash.' };
    if (raw.includes('@')) return { error: 'No user name in the URL: the credentials come from the secret manager.' };
    if (/[?#]/.test(raw)) return { error: "No query or fragment: give the instance's address only." };
    let u;
    try { u = new URL(raw); } catch { return { error: 'Enter a full URL that starts with https://' }; }
    if (u.protocol !== 'https:' && u.protocol !== 'http:') return { error: 'The URL must start with https://' };
    const host = u.hostname.replace(/\.$/, '');
    if (!host) return { error: 'The URL has no host.' };
    const path = u.pathname;
    const root = path === '' || path === '/';
    const apiPath = path === '/api/v3' || path === '/api/v3/';
    const cloud = ['github.com', 'www.github.com', 'api.github.com'].includes(host) || /^(api\.)?[a-z0-9-]+\.ghe\.com$/.test(host);
    const origin = u.protocol + '//' + (u.port ? host + ':' + u.port : host);
    if (kind === 'ghes') {
      if (cloud) return { error: "This is GitHub's cloud: choose GitHub Actions Cloud above." };
      if (!root && !apiPath) return { error: "Give the instance's address (" + origin + '), not a page in it.' };
    } else {
      if (apiPath) return { error: '/api/v3 is an Enterprise Server address: choose GitHub Actions Enterprise Server above.' };
      if (!root) return { error: 'Give the address of GitHub itself, not a page in it.' };
      if (cloud && (u.protocol !== 'https:' || u.port)) return { error: "GitHub's cloud is served over https on port 443 only." };
      if (cloud && /github\.com$/.test(host)) return { value: GITHUB_CLOUD_URL };
    }
    return { value: origin, http: u.protocol === 'http:' };
  }

  function passwordStrength(p) {
    if (!p) return [0, ''];
    let classes = 0;
    for (const re of [/[a-z]/, /[A-Z]/, /[0-9]/, /[^A-Za-z0-9]/]) if (re.test(p)) classes++;
    let score = p.length >= 8 ? 1 : 0;
    if (p.length >= 12) score++;
    if (p.length >= 16) score++;
    if (classes >= 3 && p.length >= 10) score++;
    score = Math.max(1, Math.min(4, score));
    return [score, ['', 'Weak: use 12 characters or more', 'Fair: longer is stronger', 'Good', 'Strong'][score]];
  }

  function checkNewPassword(p) {
    const bytes = new TextEncoder().encode(p).length;
    if (bytes < 8) return 'At least 8 characters.';
    if (bytes > 72) return 'At most 72 bytes.';
    if (p.trim() !== p) return 'No space at the start or the end.';
    if (/[\u0000-\u001f\u007f]/.test(p)) return 'No control characters.';
    return '';
  }

  function screenNewConnection(main) {
    main.append(h('div', { class: 'crumbs' }, h('a', { href: '#/connections', text: 'CI/CD connections' }), ' / New'),
      pageHead('Add CI/CD connection', 'A GitHub that pipelines use, reached through an agent that reads the token from the secret manager next to it.'));
    return connectionForm(main, null, '');
  }

  // screenConnection opens a saved connection, asking for its password
  // first when it is protected.
  function screenConnection(main, id) {
    let stopped = false;
    const crumbs = h('div', { class: 'crumbs' }, h('a', { href: '#/connections', text: 'CI/CD connections' }), ' / ', h('span', { id: 'crumb-name' }));
    main.append(crumbs);
    const body = h('div', {});
    main.append(body);
    let stopForm = null;
    const open = async (password) => {
      const c = await api('GET', '/api/v1/connections/' + encodeURIComponent(id), undefined, password);
      if (stopped) return;
      $('#crumb-name').textContent = c.name;
      body.replaceChildren(pageHead(c.name, KINDS[c.kind] || c.kind));
      stopForm = connectionForm(body, c, password);
    };
    (async () => {
      try {
        await open('');
      } catch (e) {
        if (e.code === 'password_required') {
          const list = await api('GET', '/api/v1/connections').catch(() => ({ connections: [] }));
          const c = list.connections.find((x) => x.id === id);
          unlock(c ? c.name : id);
        } else {
          body.replaceChildren(h('p', { class: 'notice danger', role: 'alert', text: e.message }));
        }
      }
    })();
    return () => { stopped = true; if (stopForm) stopForm(); };

    function unlock(name) {
      $('#crumb-name').textContent = name;
      document.title = name + ' · Orchestrator console';
      const f = field({ id: 'unlock-password', label: 'Password', type: 'password', autocomplete: 'current-password' });
      const submit = h('button', { type: 'submit', class: 'btn btn-primary', id: 'unlock-submit', text: 'Open connection' });
      const form = h('form', { novalidate: true, class: 'card-body', 'aria-labelledby': 'unlock-title' },
        h('h1', { id: 'unlock-title', class: 'outcome-title' }, lockMark(), h('span', { text: name + ' is protected' })),
        h('p', { class: 'muted', text: 'Enter its password to open it. Changing, testing or deleting it uses the same password.' }),
        f.wrap, h('div', { class: 'btn-row' }, submit, h('a', { class: 'btn btn-quiet', href: '#/connections', text: 'Back to the list' })));
      form.addEventListener('submit', async (ev) => {
        ev.preventDefault();
        const p = f.input.value;
        if (!p) { f.setError('Enter the password.'); f.input.focus(); return; }
        submit.disabled = true;
        try {
          await open(p);
        } catch (e) {
          f.setError(e.code === 'password_invalid' ? 'Wrong password. ' + (e.message.match(/\d+ more attempts[^.;]*/) || [''])[0] : e.message);
          f.input.select();
          f.input.focus();
          submit.disabled = false;
        }
      });
      body.replaceChildren(h('div', { class: 'card signin unlock' }, form));
      f.input.focus();
    }
  }

  // connectionForm is the "Add connection" journey, and the edit form of a
  // saved connection c (opened with password).
  function connectionForm(root, c, password) {
    const edit = Boolean(c);
    let agents = [];
    let orgs = null; // organizations fetched through the agent, or null
    let stopped = false;
    let lastTestedBody = '';
    const original = edit ? JSON.stringify(targetOf(c)) : '';

    // Step 1: provider.
    const kindInputs = {};
    const choices = h('div', { class: 'choices' }, ['ghes', 'github_cloud'].map((k) => {
      const input = h('input', { type: 'radio', name: 'kind', id: 'kind-' + k, value: k, checked: edit && c.kind === k });
      kindInputs[k] = input;
      return h('label', { class: 'choice', for: 'kind-' + k }, input,
        h('strong', { text: KINDS[k] }),
        h('span', { text: k === 'ghes' ? 'Your own GitHub Enterprise Server' : 'github.com, or GitHub Enterprise Cloud (NAME.ghe.com)' }));
    }));
    const kindErr = h('div', { class: 'error', id: 'kind-error', hidden: true });
    const stepKind = step(1, 'Provider', h('fieldset', { 'aria-describedby': 'kind-error' }, h('legend', { class: 'sr-only', text: 'Provider' }), choices, h('div', { class: 'field' }, kindErr)));

    // Step 2: name and URL.
    const fName = field({ id: 'f-name', label: 'Configuration Name', value: edit ? c.name : '', hint: 'How pipelines and people will know this connection; unique.' });
    const fURL = field({ id: 'f-url', label: 'GitHub URL', type: 'url', value: edit ? c.github_url : '', hint: 'The address of the GitHub instance.' });
    const stepDetails = step(2, 'Details', fName.wrap, fURL.wrap);

    // Step 3: agent and secret.
    const agentSelect = h('select', { id: 'f-agent' });
    const fAgent = field({ id: 'f-agent', label: 'Agent', input: agentSelect, hint: 'The agent that reads the secret in the customer\'s network and calls GitHub.' });
    const backendSlot = h('div', {});
    const secretSlot = h('div', {});
    const stepAgent = step(3, 'Connect using Orchestrator Agent', fAgent.wrap, backendSlot, secretSlot);

    // Step 4: test.
    const testBtn = h('button', { type: 'button', class: 'btn', id: 'test-connection', text: 'Test Connection' });
    const progress = h('div', { class: 'progress', id: 'test-progress', hidden: true, role: 'status' });
    const outcome = h('div', { id: 'test-outcome', 'aria-live': 'polite' });
    const stepTest = step(4, 'Test the connection', h('p', { class: 'muted', text: 'The agent reads the token, signs in to GitHub and reports what it found. The token itself never leaves the agent.' }), testBtn, progress, outcome);

    // Step 5: organization.
    const orgSelect = h('select', { id: 'f-org', disabled: true });
    const fOrg = field({ id: 'f-org', label: 'Organization', input: orgSelect, hint: 'Test the connection to fetch the organizations the account can see.' });
    const fetchOrgs = edit ? h('button', { type: 'button', class: 'btn btn-small', id: 'fetch-orgs', text: 'Fetch organizations' }) : null;
    const stepOrg = step(5, 'Organization', fOrg.wrap, fetchOrgs);

    // Step 6: password.
    const pwSlot = h('div', {});
    const stepPassword = step(6, 'Security', pwSlot);

    // Step 7: save.
    const saveBtn = h('button', { type: 'submit', class: 'btn btn-primary', id: 'save-connection', text: edit ? 'Save changes' : 'Save and activate' });
    const formErr = h('div', { class: 'notice danger', id: 'form-error', role: 'alert', hidden: true });
    const deleteBtn = edit ? h('button', { type: 'button', class: 'btn btn-danger', id: 'delete-connection', text: 'Delete connection' }) : null;
    const stepSave = step(7, edit ? 'Save' : 'Save and activate', formErr, h('div', { class: 'btn-row' }, saveBtn,
      h('a', { class: 'btn btn-quiet', href: '#/connections', text: 'Cancel' }), deleteBtn ? h('span', { class: 'spacer' }) : null, deleteBtn));

    const laterSteps = [stepDetails, stepAgent, stepTest, stepOrg, stepPassword, stepSave];
    const form = h('form', { class: 'card', id: 'connection-form', novalidate: true }, stepKind, ...laterSteps);
    root.append(form);

    function step(n, title, ...content) {
      return h('section', { class: 'step', 'aria-labelledby': 'step-' + n },
        h('div', { class: 'step-num', 'aria-hidden': 'true', text: String(n) }),
        h('div', {}, h('h2', { class: 'step-title', id: 'step-' + n, text: title }), content));
    }

    // --- the kind drives the URL
    const kind = () => (kindInputs.ghes.checked ? 'ghes' : kindInputs.github_cloud.checked ? 'github_cloud' : '');
    const showSteps = () => { for (const s of laterSteps) s.hidden = !kind(); };
    for (const k of Object.keys(kindInputs)) {
      kindInputs[k].addEventListener('change', () => {
        kindErr.hidden = true;
        const v = fURL.input.value.trim();
        if (kind() === 'github_cloud' && !v) fURL.input.value = GITHUB_CLOUD_URL;
        if (kind() === 'ghes' && v === GITHUB_CLOUD_URL) fURL.input.value = '';
        fURL.input.placeholder = kind() === 'ghes' ? 'https://' : '';
        fURL.hint.textContent = kind() === 'ghes'
          ? "The address you open your GitHub Enterprise Server at; the agent adds /api/v3."
          : 'github.com, or NAME.ghe.com for GitHub Enterprise Cloud with data residency.';
        showSteps();
        if (fURL.input.value) validateURL();
        targetChanged();
      });
    }
    showSteps();

    function validateURL() {
      const r = checkGitHubURL(kind(), fURL.input.value.trim());
      fURL.setError(r.error || '');
      if (!r.error) {
        fURL.hint.textContent = 'Saved as ' + r.value + (r.http ? ': plain http, which the agent must allow in policy.allow_http_hosts.' : '.');
      }
      return r;
    }
    fURL.input.addEventListener('input', () => { validateURL(); targetChanged(); });
    fName.input.addEventListener('input', () => fName.setError(''));

    // --- agents and the secret manager they offer
    function currentAgent() { return agents.find((a) => a.id === agentSelect.value); }
    function currentBackend() {
      const sel = $('#f-backend', backendSlot);
      return sel ? sel.dataset.backend || sel.value : '';
    }
    const secretFields = {};
    function renderAgents() {
      const keep = agentSelect.value || (edit ? c.agent_id : '');
      const usable = agents.filter((a) => a.status !== 'revoked' || a.id === keep);
      const opts = [h('option', { value: '', text: usable.length ? 'Choose an agent' : 'No agents: register one first' })];
      for (const a of usable) {
        opts.push(h('option', { value: a.id, disabled: a.status === 'pending' || a.status === 'revoked', selected: a.id === keep, text: a.name + ' — ' + (STATUS[a.status] || a.status).toLowerCase() }));
      }
      agentSelect.replaceChildren(...opts);
      agentSelect.value = keep;
    }
    function renderBackend() {
      const a = currentAgent();
      const had = currentBackend();
      backendSlot.replaceChildren();
      if (!a) { renderSecret(''); return; }
      const backends = a.backends || [];
      if (!backends.length) {
        backendSlot.append(h('p', { class: 'notice warn', id: 'f-backend-none', text: 'This agent has not connected yet, so its secret managers are not known. Start it, then come back.' }));
        renderSecret('');
        return;
      }
      let f;
      if (backends.length === 1) {
        f = field({ id: 'f-backend', label: 'Secret manager', value: backendLabel(backends[0]), readonly: true, hint: 'Selected from the agent: it is the secret manager this agent has.' });
        f.input.dataset.backend = backends[0].name;
      } else {
        const want = (edit && c.secret && c.secret.backend) || had;
        const sel = h('select', {}, backends.map((b) => h('option', { value: b.name, selected: b.name === want, text: backendLabel(b) })));
        f = field({ id: 'f-backend', label: 'Secret manager', input: sel, hint: 'This agent has several secret managers; pick the one that holds the token.' });
        sel.addEventListener('change', () => { renderSecret(sel.value); targetChanged(); });
      }
      backendSlot.append(f.wrap);
      renderSecret(currentBackend());
    }
    function renderSecret(backend) {
      const before = {};
      for (const [k, f] of Object.entries(secretFields)) before[k] = f.input.value;
      for (const k of Object.keys(secretFields)) delete secretFields[k];
      secretSlot.replaceChildren();
      if (!backend) return;
      const s = (edit && c.secret && c.secret.backend === backend) ? c.secret : {};
      const defs = backend === 'azure'
        ? [['vault_name', 'Vault Name', 'f-vault-name', 'The Key Vault: its name, or its address NAME.vault.azure.net.'],
          ['username_secret', 'Username Secret', 'f-username-secret', 'The secret that holds the user name (optional).'],
          ['password_secret', 'Password Secret', 'f-password-secret', 'The secret that holds the token.']]
        : [['secret_name', 'Secret Name', 'f-secret-name', backend === 'aws' ? 'The secret\'s name, or its ARN for another account.' : 'The entry of the agent\'s local secrets file.'],
          ['username_key', 'Username Key', 'f-username-key', 'The key of the secret\'s JSON that holds the user name (optional).'],
          ['password_key', 'Password Key', 'f-password-key', 'The key of the secret\'s JSON that holds the token.']];
      const grid = h('div', { class: 'grid-3' });
      for (const [key, label, id, hint] of defs) {
        const f = field({ id, label, value: before[key] !== undefined ? before[key] : (s[key] || ''), hint });
        f.input.addEventListener('input', () => { f.setError(''); targetChanged(); });
        secretFields[key] = f;
        grid.append(f.wrap);
      }
      secretSlot.append(grid);
    }
    agentSelect.addEventListener('change', () => {
      fAgent.setError('');
      const a = currentAgent();
      backendSig = JSON.stringify(a ? [a.id, a.backends || []] : null);
      renderBackend();
      targetChanged();
    });

    let backendSig = null;
    const loadAgents = async () => {
      const list = await api('GET', '/api/v1/agents');
      if (stopped) return;
      const focused = document.activeElement === agentSelect;
      agents = list.agents;
      if (!focused) renderAgents();
      // The secret manager follows the agent: render it again when the
      // agent's backends change (it connected for the first time).
      const a = currentAgent();
      const sig = JSON.stringify(a ? [a.id, a.backends || []] : null);
      if (sig !== backendSig) { backendSig = sig; renderBackend(); }
    };

    // --- what is sent
    function targetOf(x) {
      const sec = {};
      for (const [k, v] of Object.entries(x.secret || {})) if (v) sec[k] = v;
      return { kind: x.kind, github_url: x.github_url, agent_id: x.agent_id, secret: sec };
    }
    function body() {
      const secret = { backend: currentBackend() };
      for (const [k, f] of Object.entries(secretFields)) {
        const v = f.input.value.trim();
        if (v) secret[k] = v;
      }
      const r = checkGitHubURL(kind(), fURL.input.value.trim());
      return {
        name: fName.input.value.trim(), kind: kind(), github_url: r.value || fURL.input.value.trim(),
        agent_id: agentSelect.value, secret,
      };
    }
    const targetDirty = () => edit && JSON.stringify(targetOf(body())) !== original;

    // The organization list belongs to what was tested: a change of the
    // target empties it.
    function targetChanged() {
      if (JSON.stringify(targetOf(body())) === lastTestedBody) return;
      if (orgs !== null && !edit) setOrgs(null);
      if (edit) {
        const dirty = targetDirty();
        if (fetchOrgs) fetchOrgs.disabled = dirty;
        orgSelect.disabled = dirty || orgs === null;
        fOrg.hint.textContent = dirty ? 'Save the changed details first, then fetch the organizations again.' : fOrg.hint.textContent;
      }
    }

    // checkFields marks every missing or invalid field; it returns the first.
    function checkFields(forSave) {
      const bad = [];
      if (!kind()) { kindErr.replaceChildren(icon('alert'), h('span', { text: 'Choose a provider.' })); kindErr.hidden = false; bad.push(kindInputs.ghes); }
      if (forSave) {
        const n = fName.input.value.trim();
        fName.setError(n ? '' : 'Enter a name for this connection.');
        if (!n) bad.push(fName.input);
      }
      if (kind()) {
        const r = validateURL();
        if (r.error) bad.push(fURL.input);
        if (!agentSelect.value) { fAgent.setError('Choose the agent that reaches this GitHub.'); bad.push(agentSelect); }
        const req = currentBackend() === 'azure' ? ['vault_name', 'password_secret'] : ['secret_name', 'password_key'];
        for (const k of req) {
          const f = secretFields[k];
          if (f && !f.input.value.trim()) { f.setError('Required.'); bad.push(f.input); }
        }
        if (agentSelect.value && !currentBackend()) bad.push(agentSelect);
      }
      if (bad.length) bad[0].focus();
      return bad.length === 0;
    }

    // serverError puts an API error next to the field it names.
    function serverError(e) {
      const m = e.message || '';
      const first = m.split(/[\s:]/)[0];
      const map = {
        name: fName, github_url: fURL, agent_id: fAgent, organization: fOrg,
        'secret.secret_name': secretFields.secret_name, 'secret.username_key': secretFields.username_key,
        'secret.password_key': secretFields.password_key, 'secret.vault_name': secretFields.vault_name,
        'secret.username_secret': secretFields.username_secret, 'secret.password_secret': secretFields.password_secret,
        password: pw.fields && pw.fields.p1,
      };
      let f = map[first];
      if (!f && e.code === 'conflict' && /named/.test(m)) f = fName;
      if (!f && first.startsWith('secret.backend')) f = fAgent;
      if (f) {
        f.setError(m);
        f.input.focus();
        return true;
      }
      return false;
    }

    // --- test
    let testing = false;
    testBtn.addEventListener('click', async () => {
      if (testing || !checkFields(false)) return;
      testing = true;
      testBtn.disabled = true;
      outcome.replaceChildren();
      const a = currentAgent();
      const started = Date.now();
      const tick = () => {
        progress.replaceChildren(h('span', { class: 'spinner', 'aria-hidden': 'true' }),
          h('span', { text: 'Testing through agent ' + (a ? a.name : '') + ': it reads the secret and signs in to GitHub… ' + Math.floor((Date.now() - started) / 1000) + ' s' }));
      };
      tick();
      progress.hidden = false;
      const timer = setInterval(tick, 1000);
      const b = body();
      try {
        let ans;
        if (edit && !targetDirty()) ans = await api('POST', '/api/v1/connections/' + encodeURIComponent(c.id) + '/test?wait=30s', undefined, password);
        else ans = await api('POST', '/api/v1/connections:test?wait=30s', { kind: b.kind, github_url: b.github_url, agent_id: b.agent_id, secret: b.secret });
        let job = ans.job;
        while (!ans.test && job && !['succeeded', 'failed', 'expired', 'canceled'].includes(job.state)) {
          job = await api('GET', '/api/v1/jobs/' + encodeURIComponent(job.id) + '?wait=10s');
        }
        if (stopped) return;
        const test = ans.test || testFromJob(job);
        lastTestedBody = JSON.stringify(targetOf(b));
        renderOutcome(outcome, test);
        const conn = job && job.result && job.result.connection;
        if (test.ok && conn) setOrgs(conn.organizations || []);
      } catch (e) {
        if (stopped) return;
        if (e.code === 'invalid_params' && serverError(e)) {
          outcome.replaceChildren(failure({ code: e.code, message: 'Correct the field marked above, then test again.' }));
        } else {
          outcome.replaceChildren(failure({ code: e.code, message: e.message }));
        }
      } finally {
        clearInterval(timer);
        progress.hidden = true;
        testBtn.disabled = false;
        testing = false;
      }
    });

    function testFromJob(job) {
      const o = job && job.result && job.result.connection;
      if (job && job.state === 'succeeded' && o) {
        return {
          ok: true, at: job.finished_at, login: o.login, ghes_version: o.ghes_version, token_type: o.token_type, api_url: o.api_url,
          scopes_listable: o.scopes_listable, scopes: o.scopes, missing_scopes: o.missing_scopes, warnings: o.warnings,
          organizations: (o.organizations || []).length, token_expires_at: o.token_expires_at,
        };
      }
      return { ok: false, error: (job && job.error) || { code: 'internal', message: 'The test ended without a result.' } };
    }

    // --- organizations
    function setOrgs(list) {
      orgs = list;
      const current = edit ? c.organization : '';
      if (list === null) {
        orgSelect.replaceChildren(h('option', { value: '', text: '—' }));
        orgSelect.disabled = true;
        fOrg.hint.textContent = 'Test the connection to fetch the organizations the account can see.';
        return;
      }
      const opts = [h('option', { value: '', text: list.length ? 'Choose an organization' : 'The account sees no organization' })];
      for (const o of list) opts.push(h('option', { value: o.login, selected: o.login === current, text: o.description ? o.login + ' — ' + o.description : o.login }));
      orgSelect.replaceChildren(...opts);
      orgSelect.disabled = false;
      fOrg.hint.textContent = list.length + (list.length === 1 ? ' organization' : ' organizations') + ' fetched through the agent.';
    }
    if (edit) {
      orgSelect.replaceChildren(h('option', { value: c.organization || '', text: c.organization || '—' }));
      fOrg.hint.textContent = c.organizations_fetched_at
        ? 'Fetch the organizations again to pick another one.'
        : 'Fetch the organizations through the agent to pick one.';
      fetchOrgs.addEventListener('click', async () => {
        fetchOrgs.disabled = true;
        fOrg.setError('');
        fOrg.hint.textContent = 'Fetching through the agent…';
        try {
          const r = await api('GET', '/api/v1/connections/' + encodeURIComponent(c.id) + '/organizations?wait=30s', undefined, password);
          setOrgs(r.organizations);
        } catch (e) {
          fOrg.setError(e.message);
        } finally {
          fetchOrgs.disabled = targetDirty();
        }
      });
    } else {
      setOrgs(null);
    }
    orgSelect.addEventListener('change', () => fOrg.setError(''));

    // --- password
    const pw = renderPassword();
    function renderPassword() {
      const out = { mode: 'none', fields: null };
      const p1 = field({ id: 'f-password', label: edit && c.protected ? 'New password' : 'Password', type: 'password', autocomplete: 'new-password' });
      const p2 = field({ id: 'f-password2', label: 'Type it again', type: 'password', autocomplete: 'new-password' });
      const meter = h('div', { class: 'strength', id: 'pw-strength', 'data-level': '0', 'aria-live': 'polite' },
        h('div', { class: 'strength-bar', 'aria-hidden': 'true' }, h('span', {})), h('span', { class: 'strength-text' }));
      p1.wrap.append(meter);
      const box = h('div', { class: 'grid-2', hidden: true }, p1.wrap, p2.wrap);
      out.fields = { p1, p2 };
      p1.input.addEventListener('input', () => {
        const [lvl, words] = passwordStrength(p1.input.value);
        meter.dataset.level = String(lvl);
        $('.strength-text', meter).textContent = words;
        p1.setError('');
      });
      p2.input.addEventListener('input', () => p2.setError(''));
      if (edit && c.protected) {
        const radios = [['keep', 'Keep the password'], ['change', 'Change the password'], ['remove', 'Remove the password']].map(([v, t]) => {
          const input = h('input', { type: 'radio', name: 'pw-mode', id: 'pw-' + v, value: v, checked: v === 'keep' });
          input.addEventListener('change', () => { out.mode = v === 'keep' ? 'none' : v; box.hidden = v !== 'change'; });
          return h('label', { class: 'check', for: 'pw-' + v }, input, t);
        });
        pwSlot.append(h('p', { class: 'muted' }, lockMark('Protected by a password.'), ' Opening, changing, testing or deleting this connection asks for it.'),
          h('fieldset', {}, h('legend', { class: 'sr-only', text: 'Password' }), h('div', { class: 'btn-row' }, radios)), box);
      } else {
        const check = h('input', { type: 'checkbox', id: 'f-protect' });
        check.addEventListener('change', () => { out.mode = check.checked ? 'change' : 'none'; box.hidden = !check.checked; if (check.checked) p1.input.focus(); });
        pwSlot.append(h('label', { class: 'check', for: 'f-protect' }, check, 'Secure configuration details with a password'),
          h('p', { class: 'muted', text: 'Then opening, changing, testing or deleting this connection asks for the password. It is stored only as a hash and cannot be recovered.' }),
          box);
      }
      out.check = () => {
        if (out.mode !== 'change') return true;
        const v = p1.input.value;
        const err = checkNewPassword(v);
        p1.setError(err);
        if (err) { p1.input.focus(); return false; }
        if (p2.input.value !== v) { p2.setError('The two passwords differ.'); p2.input.focus(); return false; }
        return true;
      };
      return out;
    }

    // --- save
    form.addEventListener('submit', async (ev) => {
      ev.preventDefault();
      formErr.hidden = true;
      if (!checkFields(true) || !pw.check()) return;
      const b = body();
      saveBtn.disabled = true;
      try {
        if (!edit) {
          const req = { ...b, active: true };
          if (orgSelect.value) req.organization = orgSelect.value;
          if (pw.mode === 'change') req.password = pw.fields.p1.input.value;
          const saved = await api('POST', '/api/v1/connections', req);
          toast('Connection ' + saved.name + ' is saved and active.');
          location.hash = '#/connections';
          return;
        }
        const req = { ...b };
        if (!targetDirty() && !orgSelect.disabled && orgSelect.value !== (c.organization || '')) req.organization = orgSelect.value;
        if (pw.mode === 'change') req.password = pw.fields.p1.input.value;
        if (pw.mode === 'remove') req.remove_password = true;
        const saved = await api('PUT', '/api/v1/connections/' + encodeURIComponent(c.id), req, password);
        toast('Connection ' + saved.name + ' is saved.');
        const nextPassword = pw.mode === 'change' ? req.password : pw.mode === 'remove' ? '' : password;
        root.replaceChildren(pageHead(saved.name, KINDS[saved.kind] || saved.kind));
        $('#crumb-name').textContent = saved.name;
        stopped = true;
        stopAgents();
        inner = connectionForm(root, saved, nextPassword);
      } catch (e) {
        if (!serverError(e)) {
          formErr.replaceChildren(h('strong', { text: (ERROR_HELP[e.code] || [e.code])[0] + ': ' }), e.message);
          formErr.hidden = false;
          formErr.focus();
        }
      } finally {
        saveBtn.disabled = false;
      }
    });

    if (deleteBtn) {
      deleteBtn.addEventListener('click', async () => {
        const ok = await confirmDialog({
          title: 'Delete connection ' + c.name + '?',
          text: ['Pipelines that use it can no longer reach GitHub through it. Its past jobs stay in the jobs list.'],
          confirm: 'Delete connection', danger: true,
        });
        if (!ok) return;
        try {
          await api('DELETE', '/api/v1/connections/' + encodeURIComponent(c.id), undefined, password);
          toast('Connection ' + c.name + ' is deleted.');
          location.hash = '#/connections';
        } catch (e) { toast(e.message); }
      });
    }

    if (edit && c.last_test) {
      renderOutcome(outcome, c.last_test, true);
    }

    let inner = null;
    if (edit) kindInputs[c.kind].dispatchEvent(new Event('change'));
    const stopAgents = every(5000, loadAgents);
    return () => { stopped = true; stopAgents(); if (inner) inner(); };
  }

  function failure(err, title) {
    const help = ERROR_HELP[err.code] || [err.code, ''];
    return h('div', { class: 'outcome failed', id: 'outcome-failed' },
      h('div', { class: 'outcome-title' }, icon('alert'), h('span', { text: title || help[0] })),
      h('p', { class: 'mono muted', text: err.code }),
      h('p', { text: err.message }),
      help[1] ? h('p', { class: 'fix' }, h('strong', { text: 'What to do: ' }), help[1]) : null);
  }

  // renderOutcome says what a test found, in words.
  function renderOutcome(box, t, previous) {
    box.replaceChildren();
    const when = t.at ? h('span', { class: 'muted' }, ' · ', timeEl(t.at)) : null;
    if (!t.ok) {
      const f = failure(t.error || { code: 'internal', message: '' }, previous ? 'The last test failed' : null);
      if (when) f.firstElementChild.append(when);
      box.append(f);
      return;
    }
    const facts = h('dl', { class: 'facts' });
    const fact = (k, v) => { if (v) facts.append(h('dt', { text: k }), h('dd', {}, v)); };
    fact('Signed in as', h('strong', { id: 'outcome-login', text: t.login || '—' }));
    fact('GitHub', t.ghes_version ? 'GitHub Enterprise Server ' + t.ghes_version : 'GitHub (cloud)');
    fact('API', t.api_url ? h('span', { class: 'mono', text: t.api_url }) : '');
    fact('Token type', TOKEN_TYPES[t.token_type] || t.token_type);
    fact('Token expires', t.token_expires_at ? fmtTime(t.token_expires_at) : '');
    fact('Organizations', t.organizations === undefined ? '' : String(t.organizations) + ' visible to the account');
    const out = h('div', { class: 'outcome ok', id: 'outcome-ok' },
      h('div', { class: 'outcome-title' }, icon('check'), h('span', { text: previous ? 'The last test worked' : 'The connection works' }), when),
      facts);
    const missing = t.missing_scopes || [];
    if (t.scopes_listable === false) {
      out.append(h('p', { class: 'notice warn', text: 'This kind of token does not list its scopes, so the required permissions could not be checked. Check them in the token\'s settings on GitHub.' }));
    } else if (missing.length) {
      out.append(h('div', { class: 'scopes', id: 'missing-scopes' },
        h('p', { class: 'scopes-head' }, icon('alert'), h('strong', { text: 'The token lacks ' + missing.length + ' of the required scopes.' })),
        h('p', { class: 'muted', text: 'Add them to the token on GitHub (Settings, Developer settings, Personal access tokens), then test again.' }),
        h('table', {}, h('thead', {}, h('tr', {}, h('th', { scope: 'col', text: 'Missing scope' }), h('th', { scope: 'col', text: 'Needed to' }))),
          h('tbody', {}, missing.map((s) => h('tr', { 'data-scope': s }, h('td', {}, h('code', { text: s })), h('td', { text: SCOPE_PURPOSE[s] || 'a platform feature that needs it' })))))));
    } else {
      out.append(h('p', { class: 'muted', text: 'Every required scope is granted.' }));
    }
    if ((t.warnings || []).length) out.append(h('ul', { class: 'warnings' }, t.warnings.map((w) => h('li', { text: w }))));
    box.append(out);
  }

  // ----------------------------------------------------------------- jobs

  const TERMINAL = ['succeeded', 'failed', 'expired', 'canceled'];

  function screenJobs(main) {
    const stateSel = h('select', { id: 'jobs-state' }, [['', 'All states'], ['queued', 'Queued'], ['dispatched', 'Dispatched'], ['running', 'Running'],
      ['succeeded', 'Succeeded'], ['failed', 'Failed'], ['expired', 'Expired'], ['canceled', 'Canceled']].map(([v, t]) => h('option', { value: v, text: t })));
    const tbody = h('tbody', { id: 'jobs-body' });
    main.append(pageHead('Jobs', 'What the agents were asked to do, and what came back. No secret value is ever here: none reaches the control plane.'),
      h('div', { class: 'card' },
        h('div', { class: 'toolbar' }, h('label', { for: 'jobs-state', text: 'State' }), stateSel, h('span', { class: 'live', text: 'Live' })),
        h('div', { class: 'table-wrap' }, h('table', { 'aria-label': 'Jobs' },
          h('thead', {}, h('tr', {}, ['Job', 'Kind', 'Agent', 'Connection', 'State', 'Duration', 'Error', 'Created'].map((c) => h('th', { scope: 'col', text: c })))),
          tbody))));
    let names = { agents: new Map(), conns: new Map() };
    const load = async () => {
      const q = stateSel.value ? '&state=' + encodeURIComponent(stateSel.value) : '';
      const [jobs, agents, conns] = await Promise.all([
        api('GET', '/api/v1/jobs?limit=100' + q), api('GET', '/api/v1/agents'), api('GET', '/api/v1/connections'),
      ]);
      names = { agents: new Map(agents.agents.map((a) => [a.id, a.name])), conns: new Map(conns.connections.map((c) => [c.id, c.name])) };
      keyedRows(tbody, jobs.jobs.map((j) => ({ j, a: names.agents.get(j.agent_id), c: names.conns.get(j.connection_id) })), (x) => x.j.id, ({ j, a, c }) =>
        h('tr', { 'data-job-id': j.id },
          h('td', {}, h('a', { href: '#/jobs/' + encodeURIComponent(j.id), class: 'mono', 'data-action': 'open', text: j.id })),
          h('td', { text: JOB_KINDS[j.kind] || j.kind }),
          h('td', { text: a || j.agent_id }),
          h('td', {}, j.connection_id ? (c ? h('a', { href: '#/connections/' + encodeURIComponent(j.connection_id), text: c }) : h('span', { class: 'mono', text: j.connection_id })) : h('span', { class: 'faint', text: '—' })),
          h('td', {}, h('span', { class: 'badge', 'data-state': j.state, text: j.state })),
          h('td', { class: 'num', text: fmtMS(j.duration_ms) || '—' }),
          h('td', {}, j.error ? h('code', { text: j.error.code }) : h('span', { class: 'faint', text: '—' })),
          h('td', { class: 'nowrap' }, timeEl(j.created_at))),
      emptyRow(8, 'No jobs' + (stateSel.value ? ' in this state.' : ' yet.')));
    };
    const stop = every(3000, load);
    stateSel.addEventListener('change', load);
    return stop;
  }

  function screenJob(main, id) {
    main.append(h('div', { class: 'crumbs' }, h('a', { href: '#/jobs', text: 'Jobs' }), ' / ', h('span', { class: 'mono', text: id })));
    const body = h('div', {});
    main.append(body);
    let done = false;
    let stop = null;
    const load = async () => {
      if (done) return;
      let j;
      try {
        j = await api('GET', '/api/v1/jobs/' + encodeURIComponent(id));
      } catch (e) {
        body.replaceChildren(h('p', { class: 'notice danger', role: 'alert', text: e.message }));
        done = true;
        return;
      }
      const [agents, conns] = await Promise.all([api('GET', '/api/v1/agents'), api('GET', '/api/v1/connections')]);
      const agent = agents.agents.find((a) => a.id === j.agent_id);
      const conn = conns.connections.find((c) => c.id === j.connection_id);
      done = TERMINAL.includes(j.state);
      render(j, agent, conn);
    };
    stop = every(2000, load);
    return () => stop();

    function render(j, agent, conn) {
      const t0 = new Date(j.created_at).getTime();
      const stepEl = (label, at, extra) => h('li', { class: at ? '' : 'pending' },
        h('strong', { text: label }), extra ? h('span', { text: ' · ' + extra }) : null,
        h('div', { class: 'when' }, at ? [fmtTime(at), at === j.created_at ? '' : ' (+' + fmtMS(new Date(at).getTime() - t0) + ')'] : 'not yet'));
      const finishedLabel = TERMINAL.includes(j.state) ? 'Finished' : 'Finishes';
      const timeline = h('ol', { class: 'timeline', id: 'timeline' },
        stepEl('Queued', j.created_at),
        stepEl('Dispatched to the agent', j.dispatched_at, j.attempts > 1 ? 'attempt ' + j.attempts : ''),
        stepEl('Accepted by the agent', j.accepted_at),
        stepEl(finishedLabel, j.finished_at, TERMINAL.includes(j.state) ? j.state : ''));
      const facts = h('dl', { class: 'facts' });
      const fact = (k, v) => { if (v) facts.append(h('dt', { text: k }), h('dd', {}, v)); };
      fact('Kind', JOB_KINDS[j.kind] || j.kind);
      fact('Agent', agent ? agent.name : h('span', { class: 'mono', text: j.agent_id }));
      fact('Connection', j.connection_id ? (conn ? h('a', { href: '#/connections/' + encodeURIComponent(conn.id), text: conn.name }) : j.connection_id) : '');
      fact('Attempts', String(j.attempts));
      fact('Timeout', j.timeout);
      fact('Duration', fmtMS(j.duration_ms));
      const p = j.params || {};
      fact('GitHub', p.github_url ? h('span', { class: 'mono', text: p.github_url }) : '');
      if (p.secret) fact('Secret', h('span', { class: 'mono', text: [p.secret.backend, p.secret.secret_name || p.secret.vault_name, p.secret.password_key || p.secret.password_secret].filter(Boolean).join(' · ') }));
      fact('Organization', p.organization);

      const resultCard = h('div', { class: 'card' }, h('div', { class: 'card-body' }, h('h2', { text: 'Result' }),
        j.error ? failure(j.error)
          : j.result ? [j.result.connection ? resultSummary(j) : null, h('pre', { class: 'json', id: 'job-result', text: JSON.stringify(j.result, null, 2) })]
            : h('p', { class: 'muted', text: 'No result yet.' })));
      body.replaceChildren(
        pageHead('Job ' + j.id, JOB_KINDS[j.kind] || j.kind),
        h('div', { class: 'cols' },
          h('div', { class: 'card' }, h('div', { class: 'card-body' }, h('h2', { text: 'Timeline' }), timeline)),
          h('div', {},
            h('div', { class: 'card' }, h('div', { class: 'card-body' }, h('h2', {}, 'Summary ', h('span', { class: 'badge', 'data-state': j.state, text: j.state })), facts)),
            resultCard)));
    }

    function resultSummary(j) {
      const box = h('div', {});
      const o = j.result.connection;
      renderOutcome(box, {
        ok: true, login: o.login, ghes_version: o.ghes_version, token_type: o.token_type, api_url: o.api_url,
        scopes_listable: o.scopes_listable, missing_scopes: o.missing_scopes, warnings: o.warnings,
        organizations: (o.organizations || []).length, token_expires_at: o.token_expires_at,
      });
      return box;
    }
  }

  // ---------------------------------------------------------------- start

  document.addEventListener('DOMContentLoaded', async () => {
    $('#sign-out').addEventListener('click', signOut);
    $('#skip-link').addEventListener('click', (ev) => { ev.preventDefault(); $('#main').focus(); });
    window.addEventListener('hashchange', route);
    try {
      const s = await api('GET', '/api/v1/session');
      state.csrf = s.csrf_token;
      startApp();
    } catch {
      showSignIn();
    }
  });
})();
