// actions/github-script stand-in: `script` runs as the body of an async function of
// (require, github, context, core, fetch), as in the real action. `github` is a small REST client of
// GITHUB_API_URL (the harness's API stand-in) for the routes in ROUTES: an unknown one fails loudly.
const fs = require('fs');
const path = require('path');
const { createRequire } = require('module');

const input = (name) => process.env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] || '';
const escapeData = (s) => String(s).replace(/%/g, '%25').replace(/\r/g, '%0D').replace(/\n/g, '%0A');

const ROUTES = {
  issues: {
    listComments: 'GET /repos/{owner}/{repo}/issues/{issue_number}/comments',
    createComment: 'POST /repos/{owner}/{repo}/issues/{issue_number}/comments',
    updateComment: 'PATCH /repos/{owner}/{repo}/issues/comments/{comment_id}',
    deleteComment: 'DELETE /repos/{owner}/{repo}/issues/comments/{comment_id}',
  },
  actions: {
    listWorkflowRuns: 'GET /repos/{owner}/{repo}/actions/workflows/{workflow_id}/runs',
    listWorkflowRunArtifacts: 'GET /repos/{owner}/{repo}/actions/runs/{run_id}/artifacts',
  },
};

function delimited(file, name, value) {
  const d = `ghadelimiter_${Date.now()}_${Math.random().toString(16).slice(2)}`;
  fs.appendFileSync(file, `${name}<<${d}\n${value}\n${d}\n`);
}

const core = {
  getInput: (name) => input(name).trim(),
  info: (msg) => console.log(msg),
  debug: (msg) => console.log(`::debug::${escapeData(msg)}`),
  notice: (msg) => console.log(`::notice::${escapeData(msg)}`),
  warning: (msg) => console.log(`::warning::${escapeData(msg)}`),
  error: (msg) => console.log(`::error::${escapeData(msg)}`),
  setFailed: (msg) => { process.exitCode = 1; console.log(`::error::${escapeData(msg)}`); },
  setOutput: (name, value) => delimited(process.env.GITHUB_OUTPUT, name, value),
  exportVariable: (name, value) => delimited(process.env.GITHUB_ENV, name, value),
};

const payload = process.env.GITHUB_EVENT_PATH && fs.existsSync(process.env.GITHUB_EVENT_PATH)
  ? JSON.parse(fs.readFileSync(process.env.GITHUB_EVENT_PATH, 'utf8')) : {};
const [owner, repo] = (process.env.GITHUB_REPOSITORY || '/').split('/');
const context = {
  payload,
  eventName: process.env.GITHUB_EVENT_NAME,
  sha: process.env.GITHUB_SHA,
  ref: process.env.GITHUB_REF,
  workflow: process.env.GITHUB_WORKFLOW,
  action: process.env.GITHUB_ACTION,
  actor: process.env.GITHUB_ACTOR,
  job: process.env.GITHUB_JOB,
  runId: Number(process.env.GITHUB_RUN_ID),
  runNumber: Number(process.env.GITHUB_RUN_NUMBER),
  apiUrl: process.env.GITHUB_API_URL,
  serverUrl: process.env.GITHUB_SERVER_URL,
  repo: { owner, repo },
  issue: { owner, repo, number: (payload.issue || payload.pull_request || payload).number },
};

async function request(route, params = {}) {
  const [method, template] = route.split(' ');
  const rest = { ...params };
  const url = new URL(process.env.GITHUB_API_URL + template.replace(/\{(\w+)\}/g, (_, k) => {
    if (!(k in rest)) throw new Error(`${route}: parameter ${k} missing`);
    const v = rest[k]; delete rest[k]; return encodeURIComponent(v);
  }));
  const init = { method, headers: { accept: 'application/vnd.github+json',
    authorization: `token ${input('github-token')}`, 'user-agent': 'github-script-standin' } };
  if (method === 'GET' || method === 'DELETE') {
    for (const [k, v] of Object.entries(rest)) url.searchParams.set(k, String(v));
  } else {
    init.headers['content-type'] = 'application/json';
    init.body = JSON.stringify(rest);
  }
  const res = await fetch(url, init);
  const text = await res.text();
  const data = text ? JSON.parse(text) : undefined;
  if (res.status >= 400) {
    const err = new Error(`${route}: HTTP ${res.status} ${text}`);
    err.status = res.status;
    throw err;
  }
  return { status: res.status, url: url.toString(), headers: Object.fromEntries(res.headers), data };
}

const rest = {};
for (const [scope, methods] of Object.entries(ROUTES)) {
  rest[scope] = {};
  for (const [name, route] of Object.entries(methods)) {
    const fn = (params) => request(route, params);
    fn.endpoint = { route };
    rest[scope][name] = fn;
  }
}
const strict = (obj, where) => new Proxy(obj, {
  get(target, prop) {
    if (typeof prop === 'symbol' || prop in target) {
      const v = target[prop];
      return v && typeof v === 'object' ? strict(v, `${where}.${String(prop)}`) : v;
    }
    throw new Error(`${where}.${String(prop)} is not in the github-script stand-in's route table`);
  },
});

async function paginate(fn, params = {}) {
  const out = [];
  for (let page = 1; ; page += 1) {
    const { data, headers } = await fn({ per_page: 100, ...params, page });
    const items = Array.isArray(data) ? data : Object.values(data).find(Array.isArray) || [];
    out.push(...items);
    if (!/rel="next"/.test(headers.link || '')) return out;
  }
}

const github = strict({ rest, request, paginate }, 'github');
const workspaceRequire = (id) => {
  if (id.startsWith('./') || id.startsWith('../')) {
    return createRequire(path.join(process.cwd(), 'index.js'))(id);
  }
  return require(id);
};

(async () => {
  const AsyncFunction = Object.getPrototypeOf(async () => {}).constructor;
  const fn = new AsyncFunction('require', 'github', 'context', 'core', 'fetch', input('script'));
  try {
    const result = await fn(workspaceRequire, github, context, core, fetch);
    const encoded = input('result-encoding') === 'string' ? String(result ?? '') : JSON.stringify(result);
    core.setOutput('result', encoded === undefined ? '' : encoded);
  } catch (err) {
    core.setFailed(`Unhandled error: ${err && err.stack ? err.stack : err}`);
  }
})();
