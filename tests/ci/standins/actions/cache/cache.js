// The actions/cache stand-in: entries are tar files in the folder MLGATE_ACT_CACHE (mounted by the harness),
// named by the sha256 of the key; restore-keys match by prefix of the recorded key, newest first.
const crypto = require('crypto');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { execFileSync } = require('child_process');

const input = (name) => (process.env[`INPUT_${name.replace(/ /g, '_').toUpperCase()}`] || '').trim();
const lines = (s) => s.split('\n').map((l) => l.trim()).filter(Boolean);
const expand = (p) => path.resolve(process.env.GITHUB_WORKSPACE || '.', p.replace(/^~(?=$|\/)/, os.homedir()));
const entry = (root, key) => path.join(root, crypto.createHash('sha256').update(key).digest('hex'));
const append = (file, line) => fs.appendFileSync(file, `${line}\n`);

function root() {
  const dir = process.env.MLGATE_ACT_CACHE;
  if (!dir) {
    console.log('::warning::MLGATE_ACT_CACHE is not set: cache stand-in does nothing');
    return null;
  }
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}

function restore() {
  const dir = root();
  const key = input('key');
  append(process.env.GITHUB_STATE, `CACHE_KEY=${key}`);
  if (!dir) return;
  let hit = fs.existsSync(`${entry(dir, key)}.tar`) ? key : '';
  if (!hit) {
    const prefixes = lines(input('restore-keys'));
    const known = fs.readdirSync(dir).filter((f) => f.endsWith('.key'))
      .map((f) => ({ key: fs.readFileSync(path.join(dir, f), 'utf8'), at: fs.statSync(path.join(dir, f)).mtimeMs }))
      .sort((a, b) => b.at - a.at);
    for (const p of prefixes) {
      const found = known.find((k) => k.key.startsWith(p));
      if (found) { hit = found.key; break; }
    }
  }
  if (hit) {
    execFileSync('tar', ['-xf', `${entry(dir, hit)}.tar`, '-C', '/'], { stdio: 'inherit' });
    console.log(`Cache restored from key: ${hit}`);
  } else {
    console.log(`Cache not found for input keys: ${key}`);
  }
  append(process.env.GITHUB_OUTPUT, `cache-hit=${hit === key}`);
  append(process.env.GITHUB_STATE, `CACHE_MATCHED=${hit}`);
}

function save() {
  const dir = root();
  const key = process.env.STATE_CACHE_KEY || input('key');
  if (!dir) return;
  if (process.env.STATE_CACHE_MATCHED === key) {
    console.log(`Cache hit occurred on the primary key ${key}, not saving cache.`);
    return;
  }
  const paths = lines(input('path')).map(expand).filter((p) => fs.existsSync(p)).map((p) => p.replace(/^\//, ''));
  if (paths.length === 0) {
    console.log('::warning::Path Validation Error: Path(s) specified in the action for caching do(es) not exist, hence no cache is being saved.');
    return;
  }
  const file = entry(dir, key);
  execFileSync('tar', ['-cf', `${file}.tmp`, '-C', '/', ...paths], { stdio: 'inherit' });
  fs.renameSync(`${file}.tmp`, `${file}.tar`);
  fs.writeFileSync(`${file}.key`, key);
  console.log(`Cache saved with key: ${key}`);
}

module.exports = { restore, save };
