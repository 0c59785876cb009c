/** What a registry login is made of. */

export interface Credentials {
  username: string;
  /** A password, or a personal access token used as one. */
  password?: string;
  /** An OAuth2 refresh token (docker's `identitytoken`), traded at the token realm for access tokens. */
  identityToken?: string;
}

/** docker's helper protocol marks an identity token with this user name. */
export const TOKEN_USERNAME = '<token>';

/**
 * The host key credentials are filed under. docker writes docker.io as
 * `https://index.docker.io/v1/`; everything else as the bare host[:port].
 */
export function authKey(host: string): string {
  return isDockerHub(host) ? 'https://index.docker.io/v1/' : host;
}

export function isDockerHub(host: string): boolean {
  return ['docker.io', 'index.docker.io', 'registry-1.docker.io'].includes(host);
}

/** Reduces a key as it appears in a file (`https://host/v1/`, `host/ns/repo`) to its host. */
export function hostOfKey(key: string): string {
  let k = key.replace(/^[a-z]+:\/\//i, '');
  const slash = k.indexOf('/');
  if (slash >= 0) k = k.slice(0, slash);
  return isDockerHub(k) ? 'docker.io' : k;
}
