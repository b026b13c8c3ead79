// A real OpenID provider (panva/oidc-provider) for Gatehouse's validate-jwt end-to-end tests.
//
// It issues JWT access tokens through the client_credentials grant with resource indicators
// (RFC 8707): the `resource` parameter becomes the token's `aud`. Loopback only, ports chosen
// by the OS. Once listening it prints one JSON line:
//   {"issuer": "http://127.0.0.1:P1", "other_issuer": "http://127.0.0.1:P2", "admin": "http://127.0.0.1:P3"}
// `other_issuer` is a second provider sharing the same keys (tokens with a wrong `iss` but a
// valid signature). The admin listener rotates keys like a real provider would:
//   POST /rotate    a new RSA signing key is published first and signs from now on; the old one
//                   stays published (tokens it signed still verify)
//   POST /withdraw  every RSA key but the newest is removed from the JWKS
//   GET  /stats     {"jwks_hits": N, "rsa_kids": [...]} — how often the JWKS was fetched
// Rotation rebuilds the Provider instance with the new key set behind the same issuer URL.

import crypto from 'node:crypto';
import http from 'node:http';

import Provider, { errors } from 'oidc-provider';

// Start-up steps go to stderr with the time since the process started: the harness shows them
// only when a start fails, to say where it stopped.
const step = (what) => process.stderr.write(`[${Math.round(performance.now())} ms] ${what}\n`);
step('modules loaded');

export const CLIENT_ID = 'gatehouse-test';
export const CLIENT_SECRET = 'gatehouse-test-secret-0123456789';

const RESOURCES = {
  'api://orders': { scope: 'orders.read orders.write', ttl: 300, alg: 'RS256' },
  'api://orders-es': { scope: 'orders.read orders.write', ttl: 300, alg: 'ES256' },
  'api://payments': { scope: 'payments.read', ttl: 300, alg: 'RS256' },
  'api://short': { scope: 'orders.read', ttl: 1, alg: 'RS256' },
};

function privateJwk(type, options, kid, alg) {
  const { privateKey } = crypto.generateKeyPairSync(type, options);
  return { ...privateKey.export({ format: 'jwk' }), kid, alg, use: 'sig' };
}

let generation = 1;
let keys = [
  privateJwk('rsa', { modulusLength: 2048 }, 'rsa-1', 'RS256'),
  privateJwk('ec', { namedCurve: 'P-256' }, 'ec-1', 'ES256'),
];
step('keys generated');
let jwksHits = 0;

function makeProvider(issuer) {
  // The first key of each type signs: rotation puts the new key first.
  const signingKid = {
    RS256: keys.find((k) => k.kty === 'RSA').kid,
    ES256: keys.find((k) => k.kty === 'EC').kid,
  };
  const provider = new Provider(issuer, {
    clients: [{
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      grant_types: ['client_credentials'],
      redirect_uris: [],
      response_types: [],
      token_endpoint_auth_method: 'client_secret_post',
    }],
    jwks: { keys },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: () => 'api://orders',
        useGrantedResource: () => true,
        getResourceServerInfo: (_ctx, resource) => {
          const r = RESOURCES[resource];
          if (!r) throw new errors.InvalidTarget();
          return {
            scope: r.scope,
            audience: resource,
            accessTokenTTL: r.ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: r.alg, kid: signingKid[r.alg] } },
          };
        },
      },
    },
  });
  return provider;
}

function listen(handler) {
  const server = http.createServer(handler);
  return new Promise((resolve) => {
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

const current = {};
const mainServer = await listen((req, res) => {
  if (req.url.startsWith('/jwks')) jwksHits += 1;
  current.main.callback()(req, res);
});
const otherServer = await listen((req, res) => current.other.callback()(req, res));
const issuer = `http://127.0.0.1:${mainServer.address().port}`;
const otherIssuer = `http://127.0.0.1:${otherServer.address().port}`;

function rebuild() {
  current.main = makeProvider(issuer);
  current.other = makeProvider(otherIssuer);
}
rebuild();
step('providers listening');

function json(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}

const adminServer = await listen((req, res) => {
  const rsaKids = () => keys.filter((k) => k.kty === 'RSA').map((k) => k.kid);
  if (req.method === 'POST' && req.url === '/rotate') {
    generation += 1;
    keys = [privateJwk('rsa', { modulusLength: 2048 }, `rsa-${generation}`, 'RS256'), ...keys];
    rebuild();
    return json(res, 200, { rsa_kids: rsaKids() });
  }
  if (req.method === 'POST' && req.url === '/withdraw') {
    const newest = rsaKids()[0];
    keys = keys.filter((k) => k.kty !== 'RSA' || k.kid === newest);
    rebuild();
    return json(res, 200, { rsa_kids: rsaKids() });
  }
  if (req.method === 'GET' && req.url === '/stats') {
    return json(res, 200, { jwks_hits: jwksHits, rsa_kids: rsaKids() });
  }
  return json(res, 404, { error: 'not found' });
});

process.stdout.write(`${JSON.stringify({
  issuer,
  other_issuer: otherIssuer,
  admin: `http://127.0.0.1:${adminServer.address().port}`,
})}\n`);

// The test harness kills this process by PID; also stop when stdin closes (the parent died).
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
