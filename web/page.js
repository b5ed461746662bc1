// smsgate-ca web page: the screen. Checks the IP, makes the key pair and the CSR in this
// browser (csr.js), posts the CSR to the API, polls for the result with backoff and shows the
// certificate and the private key with download buttons.
//
// The private key is only ever shown here and kept in this tab's sessionStorage, with the
// request id, so that a reload while waiting picks the request up again. It is never sent,
// never put in localStorage, and forgotten on "Start a new request" or a denial.

import {
  buildCsr,
  certificateFacts,
  checkIp,
  generateKeyPair,
  parseIp,
  pem,
  pemDecode,
  sameBytes,
  spkiPoint,
} from "./csr.js";

const API = "/api/v1";
const STORAGE_KEY = "smsgate-ca.request";
const FIRST_DELAY_MS = 1000;
const MAX_DELAY_MS = 15_000;
const BACKOFF = 1.5;
const ADVICE = {
  public_ip: "Type the private address of your server, such as 192.168.1.10.",
  ip_not_allowed:
    "Check the IP address of your server, or ask the CA's operator which ranges this CA serves.",
  ip_denied:
    "Check the IP address of your server, or ask the CA's operator which ranges this CA serves.",
  denied_by_operator: "The CA's operator refused this request: ask them why before trying again.",
  expired: "No operator decided in time: ask the CA's operator, then start a new request.",
  unknown_type: "Pick one of the listed types and try again.",
  other:
    "Reload this page and try again; if it happens again, tell the CA's operator the message " +
    "above.",
};

const $ = (id) => document.getElementById(id);
const form = $("request-form");
const ipInput = $("ip");
const typeSelect = $("type");
const requestButton = $("request");
const statusLine = $("status");
const advice = $("advice");
const progressBox = $("progress-box");
const newRequestButton = $("new-request");
const result = $("result");

// The current poll loop; replacing it stops the old one.
let polling = null;

form.addEventListener("submit", (event) => {
  event.preventDefault();
  request().catch(failed);
});
newRequestButton.addEventListener("click", startOver);
$("download-certificate").addEventListener("click", () =>
  download("server.crt", $("certificate").textContent),
);
$("download-private-key").addEventListener("click", () =>
  download("server.key", $("private-key").textContent),
);
ipInput.addEventListener("input", () => ipInput.removeAttribute("aria-invalid"));

if (!window.isSecureContext || !window.crypto?.subtle) {
  formEnabled(false);
  show(
    "problem",
    "This browser cannot make a key on this page: open it over https:// (or on 127.0.0.1), " +
      "in a current browser.",
  );
} else {
  resume();
}

// Submit: check the IP, make the key and the CSR, post it, then wait for the result.
async function request() {
  if (requestButton.disabled) return;
  show("", "");
  const ip = checkIp(ipInput.value);
  if (ip.error) {
    show("denied", `denied (nothing was sent): ${ip.error}`, ADVICE.public_ip);
    ipInput.setAttribute("aria-invalid", "true");
    ipInput.focus();
    return;
  }
  const type = typeSelect.value;
  formEnabled(false);
  waiting(true);
  show("", "Making a key pair in this browser…");
  const keys = await generateKeyPair();
  const csr = pem("CERTIFICATE REQUEST", await buildCsr(keys, ip.bytes));
  const publicKey = pem("PUBLIC KEY", await crypto.subtle.exportKey("spki", keys.publicKey));
  const key = pem("PRIVATE KEY", await crypto.subtle.exportKey("pkcs8", keys.privateKey));

  show("", "Sending the request (it holds your public key only)…");
  let response;
  try {
    response = await fetch(`${API}/csr`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ content: csr, type }),
      cache: "no-store",
    });
  } catch {
    stop();
    show("problem", "The request could not be sent: the server did not answer. Check the " +
      "connection and try again.");
    return;
  }
  const body = await readJson(response);
  if (response.status === 202 && typeof body?.request_id === "string") {
    const saved = { id: body.request_id, type, ip: ip.text, key, publicKey, since: Date.now() };
    remember(saved);
    show("", `pending: ${body.message ?? "request accepted"}`);
    await poll(saved);
    return;
  }
  stop();
  const message = body?.error?.message ?? `the server answered ${response.status}`;
  if (response.status === 429) {
    const wait = Number(response.headers.get("Retry-After")) || 60;
    show("problem", `${message}.`, `Wait ${wait} seconds, then press Request certificate again.`);
  } else if (response.status === 400 || response.status === 413) {
    show("denied", `denied: ${message}`, adviceFor(body?.error?.reason));
  } else {
    show("problem", `The request failed: ${message}.`, "Try again in a moment.");
  }
}

// Polls the request until it is decided, waiting longer between checks (1 s up to 15 s).
async function poll(saved) {
  const me = {};
  polling = me;
  formEnabled(false);
  waiting(true);
  newRequestButton.hidden = false;
  let delay = FIRST_DELAY_MS;
  for (let checks = 1; polling === me; checks++) {
    let response = null;
    let body = null;
    try {
      response = await fetch(`${API}/csr/${encodeURIComponent(saved.id)}`, { cache: "no-store" });
      body = await readJson(response);
    } catch {
      response = null;
    }
    if (polling !== me) return;
    const waited = Math.round((Date.now() - saved.since) / 1000);
    if (response?.status === 200 && body?.status === "approved") {
      approved(saved, body);
      return;
    }
    if (response?.status === 200 && body?.status === "denied") {
      forget();
      stop();
      show("denied", `denied: ${body.message}`, adviceFor(body.reason));
      return;
    }
    if (response?.status === 404) {
      forget();
      stop();
      show("problem", "The server no longer knows this request: it expired before the " +
        "signer took it.", "Start a new request.");
      return;
    }
    const seconds = Math.round(delay / 1000);
    if (response?.status === 200) {
      show("", `pending: ${body.message} (waiting ${waited} s, checked ${checks} ` +
        `${checks === 1 ? "time" : "times"}; next check in ${seconds} s). You may reload ` +
        "this page: it picks the request up again.");
    } else {
      show("", `pending: the server cannot be reached right now; trying again in ${seconds} s.`);
    }
    await sleep(delay);
    delay = Math.min(delay * BACKOFF, MAX_DELAY_MS);
  }
}

// Shows the result once the certificate is checked to be for our key and our IP.
function approved(saved, body) {
  waiting(false);
  polling = null;
  const chain = String(body.certificate ?? "");
  const leaf = pemDecode(chain, "CERTIFICATE");
  let facts = null;
  try {
    facts = leaf && certificateFacts(leaf);
  } catch {
    facts = null;
  }
  const ours = spkiPoint(pemDecode(saved.publicKey, "PUBLIC KEY"));
  const ip = parseIp(saved.ip);
  if (
    !facts ||
    !sameBytes(facts.publicKey, ours) ||
    facts.ips.length !== 1 ||
    !sameBytes(facts.ips[0], ip)
  ) {
    forget();
    stop();
    show("problem", "The server sent back a certificate that is not for this key and this " +
      "IP, so it was not shown.", "Tell the CA's operator; then start a new request.");
    return;
  }
  show("approved", `approved: ${body.message}`);
  $("certificate").textContent = chain.endsWith("\n") ? chain : `${chain}\n`;
  $("private-key").textContent = saved.key;
  const url = saved.ip.includes(":") ? `[${saved.ip}]` : saved.ip;
  document.querySelectorAll(".ip-text").forEach((e) => (e.textContent = saved.ip));
  $("webhook-example").textContent = `https://${url}:8443/webhook`;
  newRequestButton.textContent = "Start a new request (save server.key first)";
  newRequestButton.hidden = false;
  result.hidden = false;
  $("result-title").focus();
}

// A reload while a request is open: pick it up again.
function resume() {
  const saved = recall();
  if (!saved) return;
  ipInput.value = saved.ip;
  typeSelect.value = saved.type;
  show("", `pending: picking up request ${saved.id} again…`);
  poll(saved).catch(failed);
}

function startOver() {
  polling = null;
  forget();
  stop();
  show("", "");
  result.hidden = true;
  $("certificate").textContent = "";
  $("private-key").textContent = "";
  newRequestButton.hidden = true;
  newRequestButton.textContent = "Start a new request";
  ipInput.focus();
}

function failed(error) {
  polling = null;
  stop();
  show("problem", `Something went wrong in this browser: ${error?.message ?? error}.`,
    "Reload the page and try again, in a current browser.");
}

// The status line (always set) and the advice under it (hidden when empty).
function show(kind, text, hint = "") {
  statusLine.className = kind;
  statusLine.textContent = text;
  advice.textContent = hint;
  advice.hidden = hint === "";
}

function stop() {
  waiting(false);
  formEnabled(true);
}

function waiting(on) {
  progressBox.hidden = !on;
}

function formEnabled(on) {
  ipInput.disabled = !on;
  typeSelect.disabled = !on;
  requestButton.disabled = !on;
}

function adviceFor(reason) {
  return ADVICE[reason] ?? ADVICE.other;
}

function download(name, text) {
  const url = URL.createObjectURL(new Blob([text], { type: "application/x-pem-file" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

function remember(saved) {
  try {
    sessionStorage.setItem(STORAGE_KEY, JSON.stringify(saved));
  } catch {
    // Storage refused (private mode, quota): the request still works, without resuming.
  }
}

function recall() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(STORAGE_KEY) ?? "null");
    const ok =
      saved &&
      typeof saved.id === "string" &&
      typeof saved.key === "string" &&
      typeof saved.publicKey === "string" &&
      typeof saved.type === "string" &&
      typeof saved.since === "number" &&
      parseIp(saved.ip) !== null;
    return ok ? saved : null;
  } catch {
    return null;
  }
}

function forget() {
  try {
    sessionStorage.removeItem(STORAGE_KEY);
  } catch {
    // Nothing was stored.
  }
}

async function readJson(response) {
  try {
    return await response.json();
  } catch {
    return null;
  }
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
