// smsgate-ca web page: the parts without a screen.
//
// - IP addresses: parsed exactly as the smsgate-ca CLI parses them (Rust's std parser), written
//   in Rust's canonical text form, and refused when public with the CLI's message.
// - A small DER writer (ITU-T X.690) and the PKCS#10 request (RFC 2986) this page sends: an
//   empty subject, one critical subjectAltName iPAddress (RFC 5280 §4.2.1.6: critical because
//   the subject is empty), an ECDSA P-256 key and an ecdsa-with-SHA256 signature. The private
//   key is made and used by WebCrypto; nothing here sends anything anywhere.
// - A small DER reader to check that the certificate the server sends back is for our key and
//   our IP before it is shown.
//
// The server's policy is the judge of the request: tests/it/browser.rs runs every function
// here in Chromium and checks the results with Rust's parser, OpenSSL and
// `smsgate-ca policy check`.

// ---------------------------------------------------------------------------------------------
// IP addresses

// Ranges that are never globally routable (src/policy/range.rs NON_GLOBAL, in that order):
// RFC 1918, CGNAT, link-local, loopback, IPv6 ULA, IPv6 link-local, IPv6 loopback.
export const NON_GLOBAL = [
  "10.0.0.0/8",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "100.64.0.0/10",
  "169.254.0.0/16",
  "127.0.0.0/8",
  "fc00::/7",
  "fe80::/10",
  "::1/128",
];

// Parses an IPv4 or IPv6 address the way Rust's `IpAddr::from_str` does (no leading zeros in
// IPv4 parts, no zone, at most one `::` standing for at least one group, an embedded IPv4
// address only in the last 32 bits). Returns 4 or 16 bytes, or null.
export function parseIp(text) {
  if (typeof text !== "string") return null;
  return parseIpv4(text) ?? parseIpv6(text);
}

// The canonical text of an address (Rust's `Display`: RFC 5952 for IPv6, `::ffff:a.b.c.d` for
// IPv4-mapped addresses).
export function ipText(bytes) {
  if (bytes.length === 4) return Array.from(bytes).join(".");
  const groups = [];
  for (let i = 0; i < 16; i += 2) groups.push((bytes[i] << 8) | bytes[i + 1]);
  if (groups.slice(0, 5).every((g) => g === 0) && groups[5] === 0xffff) {
    return "::ffff:" + Array.from(bytes.slice(12)).join(".");
  }
  // The first longest run of two or more zero groups becomes "::".
  let best = { start: 0, len: 0 };
  let run = { start: 0, len: 0 };
  groups.forEach((g, i) => {
    if (g !== 0) {
      run = { start: i + 1, len: 0 };
      return;
    }
    run.len += 1;
    if (run.len > best.len) best = { ...run };
  });
  const hex = (list) => list.map((g) => g.toString(16)).join(":");
  if (best.len > 1) {
    return (
      hex(groups.slice(0, best.start)) + "::" + hex(groups.slice(best.start + best.len))
    );
  }
  return hex(groups);
}

// Whether an address (4 or 16 bytes) is publicly routable: outside NON_GLOBAL.
export function isPublic(bytes) {
  return !NON_GLOBAL.some((range) => inRange(bytes, range));
}

// Checks what the visitor typed: `{ bytes, text }` for a private address, or `{ error }` with
// the CLI's message (src/client/keys.rs `parse_private_ip`).
export function checkIp(typed) {
  const trimmed = String(typed).trim();
  const bytes = parseIp(trimmed);
  if (bytes === null) {
    return {
      error:
        `${JSON.stringify(String(typed))} is not an IP address: give an IPv4 or IPv6 address ` +
        "such as 192.168.1.10",
    };
  }
  const text = ipText(bytes);
  if (isPublic(bytes)) {
    return {
      error:
        `${text} is a public address: this CA only issues certificates for private addresses ` +
        "(e.g. 10.0.0.0/8, 172.16.0.0/12, 192.168.0.0/16, fc00::/7)",
    };
  }
  return { bytes, text };
}

function parseIpv4(text) {
  const parts = text.split(".");
  if (parts.length !== 4) return null;
  const bytes = new Uint8Array(4);
  for (let i = 0; i < 4; i++) {
    const n = ipv4Part(parts[i]);
    if (n === null) return null;
    bytes[i] = n;
  }
  return bytes;
}

function ipv4Part(part) {
  if (!/^[0-9]{1,3}$/.test(part) || (part.length > 1 && part[0] === "0")) return null;
  const n = Number(part);
  return n <= 255 ? n : null;
}

function parseIpv6(text) {
  const halves = text.split("::");
  if (halves.length > 2) return null;
  // An embedded IPv4 address may end the address, never stand before "::".
  const head = readGroups(halves[0], halves.length === 2 ? 7 : 8, halves.length === 1);
  if (head === null) return null;
  if (halves.length === 1) return head.length === 16 ? Uint8Array.from(head) : null;
  const tail = readGroups(halves[1], 7 - head.length / 2, true);
  if (tail === null) return null;
  const bytes = new Uint8Array(16);
  bytes.set(head, 0);
  bytes.set(tail, 16 - tail.length);
  return bytes;
}

// Reads up to `limit` colon-separated groups as bytes; "" is no group. With `ipv4Last`, the
// last may be an IPv4 address worth two groups. Null when malformed or too many.
function readGroups(text, limit, ipv4Last) {
  if (text === "") return [];
  const parts = text.split(":");
  const bytes = [];
  for (let i = 0; i < parts.length; i++) {
    const last = i === parts.length - 1;
    if (ipv4Last && last && parts[i].includes(".")) {
      const v4 = parseIpv4(parts[i]);
      if (v4 === null || bytes.length / 2 + 2 > limit) return null;
      bytes.push(...v4);
      continue;
    }
    if (!/^[0-9a-fA-F]{1,4}$/.test(parts[i]) || bytes.length / 2 + 1 > limit) return null;
    const g = parseInt(parts[i], 16);
    bytes.push(g >> 8, g & 0xff);
  }
  return bytes;
}

function inRange(bytes, cidr) {
  const [base, lengthText] = cidr.split("/");
  const net = parseIp(base);
  if (net.length !== bytes.length) return false;
  let bits = Number(lengthText);
  for (let i = 0; bits > 0; i++, bits -= 8) {
    const mask = bits >= 8 ? 0xff : (0xff << (8 - bits)) & 0xff;
    if ((bytes[i] & mask) !== (net[i] & mask)) return false;
  }
  return true;
}

// ---------------------------------------------------------------------------------------------
// DER (ITU-T X.690), just what a CSR needs

// One TLV: `tag`, then the definite length, then the parts concatenated.
export function tlv(tag, ...parts) {
  const body = concat(parts);
  return concat([Uint8Array.of(tag), derLength(body.length), body]);
}

// A definite length: short form below 128, else long form with the fewest bytes.
export function derLength(n) {
  if (n < 0x80) return Uint8Array.of(n);
  const bytes = [];
  for (let v = n; v > 0; v = Math.floor(v / 256)) bytes.unshift(v % 256);
  return Uint8Array.from([0x80 | bytes.length, ...bytes]);
}

// An OBJECT IDENTIFIER from its dotted text.
export function oid(dotted) {
  const arcs = dotted.split(".").map(Number);
  const out = [...base128(40 * arcs[0] + arcs[1])];
  for (const arc of arcs.slice(2)) out.push(...base128(arc));
  return tlv(0x06, Uint8Array.from(out));
}

// An INTEGER from unsigned big-endian bytes, in its minimal two's-complement form.
export function unsignedInteger(bytes) {
  let i = 0;
  while (i < bytes.length - 1 && bytes[i] === 0) i++;
  const magnitude = bytes.slice(i);
  const body = magnitude[0] & 0x80 ? concat([Uint8Array.of(0), magnitude]) : magnitude;
  return tlv(0x02, body.length ? body : Uint8Array.of(0));
}

// WebCrypto's ECDSA signature (r ‖ s, each the curve's size) as the DER `ECDSA-Sig-Value`
// X.509 needs (RFC 3279 §2.2.3).
export function ecdsaSignatureToDer(raw) {
  const bytes = new Uint8Array(raw);
  if (bytes.length === 0 || bytes.length % 2 !== 0) {
    throw new Error(`an ECDSA signature of ${bytes.length} bytes is not r ‖ s`);
  }
  const half = bytes.length / 2;
  return sequence(unsignedInteger(bytes.slice(0, half)), unsignedInteger(bytes.slice(half)));
}

export const sequence = (...parts) => tlv(0x30, ...parts);
const set = (...parts) => tlv(0x31, ...parts);
const octetString = (bytes) => tlv(0x04, bytes);
const bitString = (bytes) => tlv(0x03, Uint8Array.of(0), bytes);
const TRUE = Uint8Array.of(0x01, 0x01, 0xff);

function base128(n) {
  const out = [n & 0x7f];
  for (let v = Math.floor(n / 128); v > 0; v = Math.floor(v / 128)) out.unshift(0x80 | (v & 0x7f));
  return out;
}

function concat(parts) {
  const arrays = parts.map((p) => (p instanceof Uint8Array ? p : new Uint8Array(p)));
  const out = new Uint8Array(arrays.reduce((n, a) => n + a.length, 0));
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// The request

// The signing algorithm of the key pairs this page makes.
export const KEY_ALGORITHM = { name: "ECDSA", namedCurve: "P-256" };
const SIGNATURE_ALGORITHM = { name: "ECDSA", hash: "SHA-256" };

// A fresh P-256 key pair. Extractable, so that the visitor can save the private key; it is
// exported only to be shown on this page and kept in this tab's sessionStorage.
export function generateKeyPair() {
  return crypto.subtle.generateKey(KEY_ALGORITHM, true, ["sign", "verify"]);
}

// The PKCS#10 request for `ipBytes`, signed with `keyPair`, as DER bytes.
export async function buildCsr(keyPair, ipBytes) {
  const spki = new Uint8Array(await crypto.subtle.exportKey("spki", keyPair.publicKey));
  const san = sequence(
    oid(OID.subjectAltName),
    TRUE,
    octetString(sequence(tlv(0x87, ipBytes))), // GeneralName iPAddress [7]
  );
  const info = sequence(
    tlv(0x02, Uint8Array.of(0)), // version v1 (0)
    sequence(), // subject: empty, the SAN names the IP
    spki,
    tlv(0xa0, sequence(oid(OID.extensionRequest), set(sequence(san)))), // attributes [0]
  );
  const signature = await crypto.subtle.sign(SIGNATURE_ALGORITHM, keyPair.privateKey, info);
  return sequence(info, sequence(oid(OID.ecdsaWithSha256)), bitString(ecdsaSignatureToDer(signature)));
}

// PEM text: the label's BEGIN line, base64 in lines of 64, the END line.
export function pem(label, der) {
  const bytes = new Uint8Array(der);
  let binary = "";
  for (const b of bytes) binary += String.fromCharCode(b);
  const lines = btoa(binary).match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

// The DER bytes of the first PEM block with `label`, or null.
export function pemDecode(text, label) {
  const re = new RegExp(`-----BEGIN ${label}-----([A-Za-z0-9+/=\\s]*?)-----END ${label}-----`);
  const m = re.exec(String(text));
  if (!m) return null;
  try {
    return Uint8Array.from(atob(m[1].replace(/\s+/g, "")), (c) => c.charCodeAt(0));
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// Reading the certificate that comes back

// The facts of a DER certificate this page checks: the public key's BIT STRING contents (the
// EC point) and the iPAddress entries of its subjectAltName. Throws on malformed DER.
export function certificateFacts(der) {
  const cert = readTlv(der, 0);
  const tbs = readTlv(der, cert.start);
  let at = tbs.start;
  const next = () => {
    const field = readTlv(der, at);
    at = field.end;
    return field;
  };
  let field = next();
  if (field.tag === 0xa0) field = next(); // version [0]
  // field is the serial; then signature, issuer, validity, subject, subjectPublicKeyInfo.
  for (let i = 0; i < 4; i++) next();
  const spki = next();
  const key = readTlv(der, readTlv(der, spki.start).end); // skip AlgorithmIdentifier
  const facts = { publicKey: der.slice(key.start + 1, key.end), ips: [] };
  while (at < tbs.end) {
    field = next();
    if (field.tag !== 0xa3) continue; // extensions [3]
    const list = readTlv(der, field.start);
    for (let e = list.start; e < list.end; ) {
      const ext = readTlv(der, e);
      e = ext.end;
      const id = readTlv(der, ext.start);
      const sanOid = oid(OID.subjectAltName).slice(2);
      if (id.tag !== 0x06 || !sameBytes(der.slice(id.start, id.end), sanOid)) continue;
      let value = readTlv(der, id.end);
      if (value.tag === 0x01) value = readTlv(der, value.end); // critical
      const names = readTlv(der, value.start);
      for (let n = names.start; n < names.end; ) {
        const name = readTlv(der, n);
        n = name.end;
        if (name.tag === 0x87) facts.ips.push(der.slice(name.start, name.end));
      }
    }
  }
  return facts;
}

// The EC point inside a DER SubjectPublicKeyInfo (what `certificateFacts` calls publicKey).
export function spkiPoint(spki) {
  const der = new Uint8Array(spki);
  const outer = readTlv(der, 0);
  const key = readTlv(der, readTlv(der, outer.start).end);
  return der.slice(key.start + 1, key.end);
}

// Whether two byte arrays are equal.
export function sameBytes(a, b) {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

// One TLV at `at`: its tag, where its contents start and where it ends. Throws when it runs
// past the end (only definite lengths, as DER has).
function readTlv(der, at) {
  const fail = () => {
    throw new Error(`malformed DER at byte ${at}`);
  };
  if (at + 2 > der.length) fail();
  const tag = der[at];
  let length = der[at + 1];
  let start = at + 2;
  if (length & 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 4 || start + count > der.length) fail();
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + der[start + i];
    start += count;
  }
  const end = start + length;
  if (end > der.length) fail();
  return { tag, start, end };
}

const OID = {
  ecdsaWithSha256: "1.2.840.10045.4.3.2",
  extensionRequest: "1.2.840.113549.1.9.14",
  subjectAltName: "2.5.29.17",
};
