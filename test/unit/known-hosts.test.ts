/** known_hosts matching, checked against what OpenSSH's own ssh-keygen writes and reads. */
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { appendKnownHost, checkHostKey, fingerprint, hostKeyType, knownHostName } from '../../src/runner/known-hosts.js';
import { ok } from '../helpers/cli.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

const test = suite('known_hosts');

interface Key {
  line: string; // "ssh-ed25519 AAAA..."
  blob: Buffer;
  path: string;
}

async function newKey(dir: string, name: string): Promise<Key> {
  const path = join(dir, name);
  await ok('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', '', '-f', path]);
  const line = (await readFile(`${path}.pub`, 'utf8')).trim().split(' ').slice(0, 2).join(' ');
  return { line, blob: Buffer.from(line.split(' ')[1], 'base64'), path };
}

let dir: string;
let k1: Key;
let k2: Key;
test.before(async () => {
  dir = await tmpDir();
  [k1, k2] = await Promise.all([newKey(dir, 'k1'), newKey(dir, 'k2')]);
});
test.after(cleanupTmp);

test('type and fingerprint agree with ssh-keygen', async () => {
  assert.is(hostKeyType(k1.blob), 'ssh-ed25519');
  const fp = (await ok('ssh-keygen', ['-l', '-f', `${k1.path}.pub`])).split(' ')[1];
  assert.is(fingerprint(k1.blob), fp);
});

test('plain entries: match, unknown, changed; ports use [host]:port', () => {
  const text = `# comment\n10.0.0.1 ${k1.line}\n[10.0.0.2]:2222 ${k2.line}\n`;
  assert.is(checkHostKey(text, '10.0.0.1', 22, k1.blob).status, 'match');
  const changed = checkHostKey(text, '10.0.0.1', 22, k2.blob);
  assert.is(changed.status, 'changed');
  assert.equal(changed.known, [`ssh-ed25519 ${fingerprint(k1.blob)}`]);
  assert.is(checkHostKey(text, '10.0.0.3', 22, k1.blob).status, 'unknown');
  assert.is(checkHostKey(text, '10.0.0.2', 2222, k2.blob).status, 'match');
  // The same address on another port is another host.
  assert.is(checkHostKey(text, '10.0.0.2', 22, k1.blob).status, 'unknown');
  assert.is(checkHostKey(text, '10.0.0.1', 2200, k2.blob).status, 'unknown');
  assert.is(knownHostName('h', 22), 'h');
  assert.is(knownHostName('h', 2222), '[h]:2222');
});

test('patterns: comma lists, wildcards, negation; markers', () => {
  const text = [
    `web1,web2 ${k1.line}`,
    `*.lab.example,!bad.lab.example ${k1.line}`,
    `@cert-authority * ${k2.line}`,
    `@revoked old.lab.example ${k1.line}`,
  ].join('\n');
  assert.is(checkHostKey(text, 'web2', 22, k1.blob).status, 'match');
  assert.is(checkHostKey(text, 'WEB1', 22, k1.blob).status, 'match');
  assert.is(checkHostKey(text, 'a.lab.example', 22, k1.blob).status, 'match');
  assert.is(checkHostKey(text, 'bad.lab.example', 22, k1.blob).status, 'unknown');
  // A CA line is not a key for the host: sealimg does not do host certificates.
  assert.is(checkHostKey(text, 'other', 22, k2.blob).status, 'unknown');
  assert.is(checkHostKey(text, 'old.lab.example', 22, k1.blob).status, 'revoked');
});

test('what we append, OpenSSH finds; what ssh-keygen -H hashes, we find', async () => {
  const file = join(dir, 'known_hosts');
  await appendKnownHost(file, '10.1.1.1', 22, k1.blob);
  await appendKnownHost(file, '10.1.1.2', 2222, k2.blob);
  assert.match(await ok('ssh-keygen', ['-F', '10.1.1.1', '-f', file]), k1.line);
  assert.match(await ok('ssh-keygen', ['-F', '[10.1.1.2]:2222', '-f', file]), k2.line);
  await ok('ssh-keygen', ['-H', '-f', file]);
  const hashed = await readFile(file, 'utf8');
  assert.not.match(hashed, '10.1.1.1');
  assert.is(checkHostKey(hashed, '10.1.1.1', 22, k1.blob).status, 'match');
  assert.is(checkHostKey(hashed, '10.1.1.1', 22, k2.blob).status, 'changed');
  assert.is(checkHostKey(hashed, '10.1.1.2', 2222, k2.blob).status, 'match');
  assert.is(checkHostKey(hashed, '10.1.1.3', 22, k2.blob).status, 'unknown');
  await writeFile(file, '');
});

test.run();
