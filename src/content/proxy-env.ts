/**
 * Which HTTP proxy a request goes through, from the environment, the way
 * curl, docker and skopeo read it: HTTPS_PROXY for https URLs, HTTP_PROXY for
 * http ones (either case), NO_PROXY for the hosts that go direct. Like Go's
 * net/http (skopeo's and docker's), loopback is never proxied: a registry on
 * this machine is reached directly whatever the settings.
 */
import { isIP } from 'node:net';

/** The proxy for `url`, or undefined to connect directly. */
export function proxyFor(url: URL, env: NodeJS.ProcessEnv): URL | undefined {
  const secure = url.protocol === 'https:';
  const raw = (secure ? env.HTTPS_PROXY ?? env.https_proxy : env.HTTP_PROXY ?? env.http_proxy)?.trim();
  if (!raw) return undefined;
  const host = bare(url.hostname);
  if (isLoopback(host) || bypassed(host, Number(url.port || (secure ? 443 : 80)), env.NO_PROXY ?? env.no_proxy ?? '')) return undefined;
  let proxy: URL;
  try {
    // "host:port" alone means http://host:port, as curl takes it.
    proxy = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(raw) ? raw : `http://${raw}`);
  } catch {
    throw Object.assign(new Error(`${secure ? 'HTTPS_PROXY' : 'HTTP_PROXY'} is not a URL: ${raw}`), { code: 'ERR_INVALID_URL' });
  }
  if (proxy.protocol !== 'http:') {
    throw Object.assign(new Error(`${secure ? 'HTTPS_PROXY' : 'HTTP_PROXY'}: only http:// proxies are supported, not ${proxy.protocol}//`), { code: 'ERR_INVALID_URL' });
  }
  return proxy;
}

/** The Proxy-Authorization value for credentials in the proxy URL, if any. */
export function proxyAuthorization(proxy: URL): string | undefined {
  if (!proxy.username) return undefined;
  const user = decodeURIComponent(proxy.username);
  const pass = decodeURIComponent(proxy.password);
  return `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}`;
}

function bare(hostname: string): string {
  return (hostname.startsWith('[') ? hostname.slice(1, -1) : hostname).toLowerCase();
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host.endsWith('.localhost') || host === '::1' || (isIP(host) === 4 && host.startsWith('127.'));
}

/**
 * NO_PROXY: comma- or space-separated; `*` is every host; `example.com` and
 * `.example.com` match it and its subdomains; an IP matches itself, an IPv4
 * CIDR (`10.0.0.0/8`) the addresses in it; `:port` narrows an entry to a port.
 */
export function bypassed(host: string, port: number, noProxy: string): boolean {
  for (let entry of noProxy.split(/[\s,]+/)) {
    entry = entry.trim().toLowerCase();
    if (!entry) continue;
    if (entry === '*') return true;
    // `name:port`, `1.2.3.4:port`, `[v6]:port`; a bare IPv6 address has colons but no port.
    const m = /^(\[[^\]]+\]|[^:]+):(\d+)$/.exec(entry);
    if (m) {
      if (Number(m[2]) !== port) continue;
      entry = m[1]!;
    }
    entry = bare(entry);
    if (entry.includes('/') && isIP(host) === 4 && inCidr(host, entry)) return true;
    const name = entry.replace(/^\*?\./, '');
    if (host === name || host.endsWith(`.${name}`)) return true;
  }
  return false;
}

function inCidr(ip: string, cidr: string): boolean {
  const [base, bits] = cidr.split('/');
  const n = Number(bits);
  if (isIP(base ?? '') !== 4 || !Number.isInteger(n) || n < 0 || n > 32) return false;
  const toInt = (a: string) => a.split('.').reduce((acc, o) => (acc << 8) + Number(o), 0) >>> 0;
  const mask = n === 0 ? 0 : (~0 << (32 - n)) >>> 0;
  return (toInt(ip) & mask) === (toInt(base!) & mask);
}
