/**
 * HTTPS_PROXY / HTTP_PROXY / NO_PROXY, as curl, docker and skopeo read them:
 * pushes and pulls through a forward proxy the test runs (CONNECT tunnels
 * for https, absolute-form requests for http), against the CNCF registry.
 * The proxy resolves `registry.test` to 127.0.0.1 itself, so sealimg reaches
 * that name only through it; loopback addresses are never proxied.
 */
import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, request as httpRequest, type IncomingMessage } from 'node:http';
import net from 'node:net';
import { suite } from 'uvu';
import * as assert from 'uvu/assert';
import { OciLayoutStore } from '../../src/content/oci-layout.js';
import { bypassed, proxyFor } from '../../src/content/proxy-env.js';
import { RemoteStore } from '../../src/content/remote.js';
import { makeImage } from '../helpers/images.js';
import { sealimg } from '../helpers/cli.js';
import { startRegistry, type TestRegistry } from '../helpers/registry.js';
import { cleanupTmp, tmpDir } from '../helpers/tmp.js';

// The proxy is one the test runs: squid or tinyproxy would resolve registry.test themselves, and the
// only name that reaches the registry here is a loopback one, which is never proxied.
const test = suite('registry client through an HTTP proxy (a forward proxy the test runs, not squid)');
const base = { HOME: '/nonexistent', XDG_RUNTIME_DIR: '', REGISTRY_AUTH_FILE: '', DOCKER_CONFIG: '', NO_PROXY: '', no_proxy: '' };
let tlsReg: TestRegistry;
let plainReg: TestRegistry;

interface TestForwardProxy {
  url: string;
  seen: string[];
  stop(): Promise<void>;
}

/** A forward proxy: CONNECT tunnels and absolute-form requests, to 127.0.0.1 whatever the host; `auth` is the Proxy-Authorization it wants. */
async function startForwardProxy(auth?: string): Promise<TestForwardProxy> {
  const seen: string[] = [];
  const sockets = new Set<net.Socket>();
  const allowed = (req: IncomingMessage) => auth === undefined || req.headers['proxy-authorization'] === auth;
  const server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    if (!allowed(req)) {
      res.writeHead(407, { 'proxy-authenticate': 'Basic realm="test"' }).end();
      return;
    }
    const target = new URL(req.url!);
    const headers = { ...req.headers };
    delete headers['proxy-authorization'];
    const up = httpRequest({ host: '127.0.0.1', port: target.port, method: req.method, path: `${target.pathname}${target.search}`, headers }, (ures) => {
      res.writeHead(ures.statusCode ?? 502, ures.headers);
      ures.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  server.on('connect', (req: IncomingMessage, client: net.Socket, head: Buffer) => {
    seen.push(`CONNECT ${req.url}`);
    if (!allowed(req)) {
      client.end('HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm="test"\r\n\r\n');
      return;
    }
    const port = Number(req.url!.split(':').pop());
    const up = net.connect(port, '127.0.0.1', () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      if (head.length) up.write(head);
      up.pipe(client);
      client.pipe(up);
    });
    up.on('error', () => client.destroy());
    client.on('error', () => up.destroy());
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as net.AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    stop: async () => {
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

test.before(async () => {
  tlsReg = await startRegistry({ tls: true });
  plainReg = await startRegistry();
});
test.after(async () => {
  await tlsReg?.stop();
  await plainReg?.stop();
  await cleanupTmp();
});

test('NO_PROXY and the proxy variables are read as curl reads them; loopback always goes direct', () => {
  const env = { HTTPS_PROXY: 'proxy.corp:3128', http_proxy: 'http://p:8080', NO_PROXY: 'internal.example, .corp.example,10.0.0.0/8,reg.example:5000' };
  assert.is(proxyFor(new URL('https://quay.io/v2/'), env)?.href, 'http://proxy.corp:3128/');
  assert.is(proxyFor(new URL('http://quay.io/v2/'), env)?.href, 'http://p:8080/');
  for (const direct of ['https://internal.example/', 'https://a.internal.example/', 'https://x.corp.example/', 'https://10.1.2.3/', 'https://reg.example:5000/', 'https://127.0.0.1:5000/', 'https://localhost/', 'https://[::1]:5000/']) {
    assert.is(proxyFor(new URL(direct), env), undefined, direct);
  }
  assert.ok(proxyFor(new URL('https://reg.example:443/'), env), 'a port narrows a NO_PROXY entry');
  assert.ok(proxyFor(new URL('https://11.0.0.1/'), env), 'outside the CIDR');
  assert.ok(bypassed('anything', 1, ' * '));
  assert.throws(() => proxyFor(new URL('https://quay.io/'), { HTTPS_PROXY: 'socks5://p:1080' }), /only http:\/\/ proxies/);
});

test('HTTPS_PROXY with credentials: push and pull tunnel through it (CONNECT), TLS checked end to end', async () => {
  const proxy = await startForwardProxy(`Basic ${Buffer.from('me:s3cret').toString('base64')}`);
  try {
    const env = { ...base, HTTPS_PROXY: proxy.url.replace('http://', 'http://me:s3cret@') };
    const root = await tmpDir();
    const local = await OciLayoutStore.open(root, { create: true });
    // 5 MB: a blob the bulk download path would take without a proxy.
    const ref = `registry.test:${tlsReg.port}/proxied/app:v1`;
    const img = await makeImage(local, { layers: [randomBytes(5_000_000), 'small'], tag: `docker.io/library/app:v1` });
    const pushed = await sealimg(root, ['push', '--ca-file', tlsReg.caFile!, 'app:v1', ref], { env });
    assert.is(pushed.code, 0, pushed.stderr);
    const root2 = await tmpDir();
    const pulled = await sealimg(root2, ['pull', '--ca-file', tlsReg.caFile!, ref], { env });
    assert.is(pulled.code, 0, pulled.stderr);
    assert.match(pulled.stdout, img.manifest.digest);
    assert.ok(proxy.seen.length > 0 && proxy.seen.every((l) => l === `CONNECT registry.test:${tlsReg.port}`), proxy.seen.join('\n'));
    const direct = await RemoteStore.open(`${tlsReg.host}/proxied/app`, { caFile: tlsReg.caFile, env: base }, 'pull');
    try {
      assert.is((await direct.resolve('v1')).digest, img.manifest.digest, 'the registry itself holds the image');
    } finally {
      await direct.close();
    }
  } finally {
    await proxy.stop();
  }
});

test('HTTP_PROXY: plain-http requests go to the proxy in absolute form', async () => {
  const proxy = await startForwardProxy();
  try {
    const env = { ...base, HTTP_PROXY: proxy.url };
    const root = await tmpDir();
    const local = await OciLayoutStore.open(root, { create: true });
    const img = await makeImage(local, { layers: [randomBytes(5_000_000)], tag: 'docker.io/library/app:v1' });
    const ref = `registry.test:${plainReg.port}/plain/app:v1`;
    assert.is((await sealimg(root, ['push', '--plain-http', 'app:v1', ref], { env })).code, 0);
    const pulled = await sealimg(await tmpDir(), ['pull', '--plain-http', ref], { env });
    assert.is(pulled.code, 0, pulled.stderr);
    assert.match(pulled.stdout, img.manifest.digest);
    assert.ok(proxy.seen.some((l) => l.startsWith(`GET http://registry.test:${plainReg.port}/v2/plain/app/blobs/sha256:`)), proxy.seen.join('\n'));
  } finally {
    await proxy.stop();
  }
});

test('a proxy that wants credentials it did not get: a clear error naming the proxy; loopback registries never use it', async () => {
  const proxy = await startForwardProxy('Basic bm9wZQ==');
  try {
    const env = { ...base, HTTPS_PROXY: proxy.url, HTTP_PROXY: proxy.url };
    const r = await sealimg(await tmpDir(), ['pull', '--ca-file', tlsReg.caFile!, `registry.test:${tlsReg.port}/proxied/app:v1`], { env });
    assert.is.not(r.code, 0);
    assert.match(r.stderr, /proxy 127\.0\.0\.1:\d+ refused a tunnel to registry\.test:\d+: it wants credentials/);
    const seen = proxy.seen.length;
    const local = await sealimg(await tmpDir(), ['pull', '--ca-file', tlsReg.caFile!, `${tlsReg.host}/proxied/app:v1`], { env });
    assert.is(local.code, 0, local.stderr);
    assert.is(proxy.seen.length, seen, '127.0.0.1 went direct');
  } finally {
    await proxy.stop();
  }
});

test.run();
